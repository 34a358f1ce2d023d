"""Generation scoring of multi-shape prompts: cell-by-cell checks, same attributes as
one-shape prompts, and chance levels that match that check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokred_core import TokredError
from tokred_train.data.patch_vq import PatchVQTokenizer
from tokred_train.data.shapes.dataset import ShapeSpec, build_shapes_dataset, draw_shapes
from tokred_train.eval.generation import _mean_chance, generation_chance, score_generated_codes


@pytest.fixture(scope="module")
def two_shapes():
    dd = build_shapes_dataset(num_train=0, num_val=40, seed=1, max_shapes=2)
    val = dd["validation"]
    vq = PatchVQTokenizer.fit(val["image"], codebook_size=128, patch_size=8)  # lossless
    records = [{"shapes": shapes} for shapes in val["shapes"]]
    return vq, vq.encode(val["image"]), records


def test_ground_truth_codes_pass_every_check(two_shapes):
    vq, codes, records = two_shapes
    assert {len(r["shapes"]) for r in records} == {1, 2}
    _, checks, acc = score_generated_codes(vq, codes, records)
    assert acc == {"kind": 1.0, "color": 1.0, "position": 1.0, "all": 1.0}
    assert all(set(c) == {"kind", "color", "position", "all"} for c in checks)


def test_size_and_extra_shapes_are_not_scored_but_wrong_colours_are():
    pair = [
        ShapeSpec("circle", "red", "top-left", "large"),
        ShapeSpec("square", "blue", "bottom-right", "small"),
    ]
    third = ShapeSpec("triangle", "green", "top-right", "large")
    images = np.stack([draw_shapes(pair), draw_shapes([*pair, third])])
    vq = PatchVQTokenizer.fit(images, codebook_size=128, patch_size=8)  # lossless
    codes = vq.encode(images)
    asked = [s.as_dict() for s in pair]
    flip = {"small": "large", "large": "small"}
    resized = [{**s, "size": flip[s["size"]]} for s in asked]
    recoloured = [{**asked[0], "color": "yellow"}, asked[1]]
    cases = [
        (0, resized, True),  # size is not scored (nor for one-shape prompts)
        (0, recoloured, False),
        (1, asked, True),  # a shape in a cell nobody asked about is not held against it
        (0, [*asked, third.as_dict()], False),  # a requested cell left empty fails
    ]
    for image, shapes, ok in cases:
        _, checks, _ = score_generated_codes(vq, codes[image : image + 1], [{"shapes": shapes}])
        assert checks[0]["all"] is ok, shapes
    _, checks, _ = score_generated_codes(vq, codes[:1], [{"shapes": recoloured}])
    assert checks[0] == {"kind": True, "color": False, "position": True, "all": False}


def test_blank_image_fails_a_two_shape_prompt(two_shapes):
    vq, codes, records = two_shapes
    i = next(k for k, r in enumerate(records) if len(r["shapes"]) == 2)
    blank = torch.full_like(codes[i : i + 1], int(codes[i].mode().values))  # background code
    _, checks, _ = score_generated_codes(vq, blank, records[i : i + 1])
    assert checks[0] == {"kind": False, "color": False, "position": False, "all": False}


def test_chance_levels_follow_the_number_of_shapes():
    one = generation_chance(1)
    assert one == generation_chance()
    assert one["all"] == pytest.approx(1 / 48)
    two = generation_chance(2)
    cells = 1 / math.comb(4, 2)
    assert two["position"] == pytest.approx(cells)
    assert two["kind"] == pytest.approx(cells / 9) and two["color"] == pytest.approx(cells / 16)
    assert two["all"] == pytest.approx(cells / 144)
    mixed = _mean_chance([{"shapes": [{}]}, {"shapes": [{}, {}]}, {"shapes": [{}, {}]}])
    assert mixed["all"] == pytest.approx((one["all"] + 2 * two["all"]) / 3)
    with pytest.raises(TokredError, match="num_shapes 5"):
        generation_chance(5)

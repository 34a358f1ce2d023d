"""The embedded shapes set: deterministic, well-formed, and consistent with its text."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from tokred_core import TokredError
from tokred_train.data import (
    COLORS,
    KINDS,
    PALETTE,
    POSITIONS,
    SIZES,
    ShapeSpec,
    as_uint8_batch,
    build_shapes_dataset,
    draw_shapes,
)


@pytest.fixture(scope="module")
def dd() -> datasets.DatasetDict:
    return build_shapes_dataset(num_train=40, num_val=12, seed=3)


def test_splits_are_real_datasets(dd):
    assert isinstance(dd, datasets.DatasetDict)
    assert set(dd) == {"train", "validation"}
    assert dd["train"].num_rows == 40 and dd["validation"].num_rows == 12
    assert isinstance(dd["train"].features["image"], datasets.Image)
    img = dd["train"][0]["image"]
    assert img.size == (32, 32) and img.mode == "RGB"


def test_deterministic_given_seed(dd):
    again = build_shapes_dataset(num_train=40, num_val=12, seed=3)
    for split in ("train", "validation"):
        assert dd[split]["caption"] == again[split]["caption"]
        assert np.array_equal(
            as_uint8_batch(dd[split]["image"]), as_uint8_batch(again[split]["image"])
        )
    other = build_shapes_dataset(num_train=40, num_val=12, seed=4)
    assert other["train"]["caption"] != dd["train"]["caption"]


def test_validation_differs_from_train(dd):
    assert dd["validation"]["caption"] != dd["train"]["caption"][:12]
    assert dd["validation"]["id"][0].startswith("validation-")
    # Held out by scene: no validation caption (one shape, so one scene each) is in train.
    assert not set(dd["validation"]["caption"]) & set(dd["train"]["caption"])


def test_record_text_matches_attributes(dd):
    for rec in dd["train"]:
        (shape,) = rec["shapes"]
        assert rec["num_shapes"] == 1
        assert shape["kind"] in KINDS and shape["color"] in COLORS
        assert shape["position"] in POSITIONS and shape["size"] in SIZES
        where = shape["position"].replace("-", " ")
        assert (
            rec["caption"] == f"a {shape['size']} {shape['color']} {shape['kind']} at the {where}"
        )
        answers = {q["question"]: q["answer"] for q in rec["questions"]}
        assert answers[f"what shape is at the {where}?"] == shape["kind"]
        assert answers[f"what colour is the shape at the {where}?"] == shape["color"]
        assert answers[f"where is the {shape['color']} {shape['kind']}?"] == shape["position"]
        assert answers["how many shapes are there?"] == "one"
        assert all(" " not in a for a in answers.values())  # one-word answers


def test_image_holds_only_background_and_its_colour(dd):
    rec = dd["train"][0]
    pixels = {tuple(p) for p in np.asarray(rec["image"]).reshape(-1, 3)}
    assert pixels == {(255, 255, 255), PALETTE[rec["shapes"][0]["color"]]}


def test_multi_shape_images_use_distinct_cells_and_pairs():
    dd = build_shapes_dataset(num_train=30, num_val=0, seed=1, max_shapes=4)
    counts = dd["train"]["num_shapes"]
    assert max(counts) > 1 and min(counts) >= 1
    for shapes in dd["train"]["shapes"]:
        assert len({s["position"] for s in shapes}) == len(shapes)
        assert len({(s["color"], s["kind"]) for s in shapes}) == len(shapes)
    assert dd["validation"].num_rows == 0


def test_image_size_is_configurable():
    dd = build_shapes_dataset(num_train=2, num_val=1, seed=0, image_size=48)
    assert as_uint8_batch(dd["train"]["image"]).shape == (2, 48, 48, 3)


def test_shape_geometry():
    square = draw_shapes([ShapeSpec("square", "red", "top-left", "large")], 32)
    circle = draw_shapes([ShapeSpec("circle", "red", "top-left", "large")], 32)
    tri = draw_shapes([ShapeSpec("triangle", "red", "top-left", "large")], 32)
    area = [int((im != 255).any(-1).sum()) for im in (square, circle, tri)]
    assert area[0] > area[1] > area[2] > 0
    assert not (square[16:] != 255).any() and not (square[:, 16:] != 255).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train": -1},
        {"max_shapes": 0},
        {"max_shapes": 5},
        {"image_size": 7},
        {"image_size": 33},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(TokredError):
        build_shapes_dataset(**{"num_train": 1, "num_val": 1, **kwargs})


def test_bad_shape_spec_raises():
    with pytest.raises(TokredError, match="hexagon"):
        draw_shapes([ShapeSpec("hexagon", "red", "top-left", "large")])
    with pytest.raises(TokredError, match="purple"):
        draw_shapes([ShapeSpec("circle", "purple", "top-left", "large")])

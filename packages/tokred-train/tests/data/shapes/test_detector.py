"""The shapes detector: exact on ground truth, robust on VQ reconstructions."""

from __future__ import annotations

import numpy as np
import pytest
from tokred_core import TokredError
from tokred_train.data import (
    PatchVQTokenizer,
    ShapeSpec,
    as_uint8_batch,
    build_shapes_dataset,
    check,
    check_scene,
    detect,
    detect_dominant,
    draw_shapes,
    score,
)


@pytest.fixture(scope="module")
def single():
    dd = build_shapes_dataset(num_train=200, num_val=200, seed=11)
    train, val = dd["train"], dd["validation"]
    return (
        (as_uint8_batch(train["image"]), [shapes[0] for shapes in train["shapes"]]),
        (as_uint8_batch(val["image"]), [shapes[0] for shapes in val["shapes"]]),
    )


def test_ground_truth_accuracy(single):
    _, (images, expected) = single
    acc = score(images, expected)
    assert acc["color"] >= 0.95 and acc["position"] >= 0.95
    assert acc["kind"] >= 0.85 and acc["size"] >= 0.95
    print("ground truth:", acc)


def test_vq_reconstruction_accuracy(single):
    # The detector's tolerance of VQ blur, on the images the codebook was fitted to: the
    # validation split holds scenes the fit never saw (held out), which would test the
    # lossy 64-entry VQ's generalisation instead of the detector.
    (images, expected), _ = single
    vq = PatchVQTokenizer.fit(images, codebook_size=64, patch_size=4, seed=0, iters=10)
    acc = score(vq.decode(vq.encode(images)), expected)
    print("VQ-64 reconstructions:", acc)
    assert acc["color"] >= 0.95 and acc["position"] >= 0.95
    assert acc["kind"] >= 0.7


def test_every_attribute_combination_at_default_size():
    for kind in ("circle", "square", "triangle"):
        for size in ("small", "large"):
            for pos in ("top-left", "top-right", "bottom-left", "bottom-right"):
                spec = ShapeSpec(kind, "blue", pos, size)
                det = detect_dominant(draw_shapes([spec]))
                assert det is not None and det.as_dict() == spec.as_dict()


def test_check_reports_per_attribute():
    img = draw_shapes([ShapeSpec("circle", "red", "top-left", "large")])
    ok = check(img, {"kind": "circle", "color": "red", "position": "top-left", "count": 1})
    assert ok == {"color": True, "kind": True, "position": True, "count": True, "all": True}
    bad = check(img, {"kind": "square", "color": "red", "position": "bottom-left", "count": "two"})
    assert bad == {"color": True, "kind": False, "position": False, "count": False, "all": False}


def test_empty_image_fails_everything():
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert detect(blank) == []
    assert check(blank, {"color": "red", "kind": "circle"}) == {
        "color": False,
        "kind": False,
        "all": False,
    }
    assert check(blank, {"count": 0})["count"]


def test_speckle_is_ignored():
    img = draw_shapes([ShapeSpec("square", "green", "bottom-right", "large")])
    img[2, 2] = (220, 30, 30)  # one stray red pixel
    assert len(detect(img)) == 1


def test_multi_shape_scenes():
    dd = build_shapes_dataset(num_train=0, num_val=60, seed=5, max_shapes=4)
    val = dd["validation"]
    for img, shapes in zip(as_uint8_batch(val["image"]), val["shapes"], strict=True):
        assert check_scene(img, shapes)["all"]
    img = draw_shapes([ShapeSpec("circle", "red", "top-left", "large")])
    res = check_scene(
        img, [{"kind": "circle", "color": "red", "position": "top-left"}, {"position": "top-right"}]
    )
    assert not res["position"] and not res["count"] and not res["all"]


def test_check_scene_reports_each_attribute_of_a_two_shape_scene():
    red_circle = ShapeSpec("circle", "red", "top-left", "large")
    blue_square = ShapeSpec("square", "blue", "bottom-right", "small")
    img = draw_shapes([red_circle, blue_square])
    assert check_scene(img, [red_circle.as_dict(), blue_square.as_dict()])["all"]
    # The right cells but the colours swapped: position and kind hold, colour fails.
    swapped = [
        {**red_circle.as_dict(), "color": "blue"},
        {**blue_square.as_dict(), "color": "red"},
    ]
    res = check_scene(img, swapped)
    assert res["position"] and res["kind"] and res["size"] and res["count"]
    assert not res["color"] and not res["all"]
    # An extra, unrequested shape fails only the count; without sizes, size is not judged.
    extra = draw_shapes(
        [red_circle, blue_square, ShapeSpec("triangle", "green", "top-right", "large")]
    )
    res = check_scene(
        extra,
        [{k: v for k, v in s.as_dict().items() if k != "size"} for s in (red_circle, blue_square)],
    )
    assert res == {
        "position": True,
        "color": True,
        "kind": True,
        "size": True,
        "count": False,
        "all": False,
    }


def test_two_and_three_shape_ground_truth_is_read_exactly():
    for max_shapes in (2, 3):
        val = build_shapes_dataset(num_train=0, num_val=40, seed=2, max_shapes=max_shapes)[
            "validation"
        ]
        for img, shapes in zip(as_uint8_batch(val["image"]), val["shapes"], strict=True):
            found = sorted((d.as_dict() for d in detect(img)), key=lambda d: d["position"])
            assert found == sorted(shapes, key=lambda d: d["position"])


def test_bad_expectations_raise():
    img = draw_shapes([ShapeSpec("circle", "red", "top-left", "large")])
    with pytest.raises(TokredError, match="colour"):
        check(img, {"colour": "red"})
    with pytest.raises(TokredError, match="hexagon"):
        check(img, {"kind": "hexagon"})
    with pytest.raises(TokredError, match="2 images but 1"):
        score(np.stack([img, img]), [{"color": "red"}])

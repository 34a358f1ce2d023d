"""The shapes set's validation split is held out by scene: nothing of it is in train."""

from __future__ import annotations

import numpy as np
import pytest
from tokred_core import TokredError
from tokred_train.data.images import as_uint8_batch
from tokred_train.data.shapes.dataset import (
    COLORS,
    KINDS,
    POSITIONS,
    ShapeSpec,
    build_shapes_dataset,
    is_validation_scene,
    scene_key,
)


def _keys(split) -> set[str]:
    # Recomputed from the records' own attributes, so a split that leaked a scene fails.
    return {scene_key(shapes) for shapes in split["shapes"]}


@pytest.mark.parametrize("max_shapes", [1, 2, 3])
def test_no_validation_scene_or_image_occurs_in_train(max_shapes):
    dd = build_shapes_dataset(num_train=600, num_val=120, seed=7, max_shapes=max_shapes)
    train, val = dd["train"], dd["validation"]
    assert val.num_rows == 120 and train.num_rows == 600
    assert not _keys(train) & _keys(val)
    train_pixels = {img.tobytes() for img in as_uint8_batch(train["image"])}
    assert not any(img.tobytes() in train_pixels for img in as_uint8_batch(val["image"]))
    for shapes in val["shapes"]:
        assert is_validation_scene(shapes, seed=7)
    for shapes in train["shapes"]:
        assert not is_validation_scene(shapes, seed=7)


def test_one_shape_validation_holds_unseen_attribute_combinations():
    # With one shape per image a scene is one (kind, colour, position) combination: the
    # combinations asked in validation are never drawn in train, at any size.
    dd = build_shapes_dataset(num_train=1000, num_val=100, seed=0, max_shapes=1)
    combo = lambda s: (s["kind"], s["color"], s["position"])  # noqa: E731
    train = {combo(shapes[0]) for shapes in dd["train"]["shapes"]}
    val = {combo(shapes[0]) for shapes in dd["validation"]["shapes"]}
    assert val and not train & val
    assert len(train | val) == len(KINDS) * len(COLORS) * len(POSITIONS)  # all 48 drawn


def test_multi_shape_validation_recombines_shapes_seen_in_train():
    # Held out are combinations, not the shapes themselves: every validation shape (kind,
    # colour, cell) also occurs in some training scene, so the task is learnable.
    dd = build_shapes_dataset(num_train=1000, num_val=100, seed=0, max_shapes=2)
    seen = {
        (s["kind"], s["color"], s["position"]) for shapes in dd["train"]["shapes"] for s in shapes
    }
    for shapes in dd["validation"]["shapes"]:
        assert all((s["kind"], s["color"], s["position"]) in seen for s in shapes)
    assert max(dd["validation"]["num_shapes"]) == 2


def test_scene_key_ignores_order_and_size():
    a = ShapeSpec("circle", "red", "top-left", "large")
    b = ShapeSpec("square", "blue", "bottom-right", "small")
    small_a = ShapeSpec("circle", "red", "top-left", "small")
    assert scene_key([a, b]) == scene_key([b, small_a])
    assert scene_key([a]) == scene_key([a.as_dict()]) == "top-left:red:circle"
    assert scene_key([a]) != scene_key([ShapeSpec("circle", "red", "top-right", "large")])


def test_split_of_a_scene_depends_on_seed_and_fraction_only():
    scenes = [[ShapeSpec(k, c, p, "large")] for k in KINDS for c in COLORS for p in POSITIONS]
    split0 = [is_validation_scene(s, seed=0) for s in scenes]
    assert split0 == [is_validation_scene(s, seed=0) for s in scenes]  # deterministic
    assert split0 != [is_validation_scene(s, seed=1) for s in scenes]
    assert 0 < sum(split0) < len(scenes) // 2  # about a fifth of 48
    wider = [is_validation_scene(s, seed=0, val_fraction=0.6) for s in scenes]
    assert all(w for w, v in zip(wider, split0, strict=True) if v)  # nested as it grows


def test_validation_split_does_not_depend_on_num_train():
    # Evaluation rebuilds the validation split with num_train=0 and must get the same one.
    a = build_shapes_dataset(num_train=0, num_val=30, seed=3, max_shapes=2)["validation"]
    b = build_shapes_dataset(num_train=200, num_val=30, seed=3, max_shapes=2)["validation"]
    assert a["caption"] == b["caption"]
    assert np.array_equal(as_uint8_batch(a["image"]), as_uint8_batch(b["image"]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_fraction_names_the_value(fraction):
    with pytest.raises(TokredError, match=f"val_fraction {fraction}"):
        build_shapes_dataset(num_train=1, num_val=1, val_fraction=fraction)


def test_a_split_without_scenes_fails_with_its_name():
    # One shape per image gives 48 scenes; a vanishing fraction leaves none to validate on.
    with pytest.raises(TokredError, match="no scene of at most 1 shapes fell in the validation"):
        build_shapes_dataset(num_train=0, num_val=1, max_shapes=1, val_fraction=1e-12)

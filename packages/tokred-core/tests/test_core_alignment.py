"""The `aligned` policy (one reduced band for both tasks) and the `aligned` sharing mode's
per-layer projection sets (tokred_core.alignment)."""

from __future__ import annotations

import pytest
import torch
from tokred_core import (
    Role,
    TaskPolicies,
    TokenLayout,
    TokredError,
    coinciding_layers,
    layer_projection_sets,
    parse_policy,
    projection_groups,
)


def _layout():
    return TokenLayout.from_spans(
        [
            [("system", 1), ("image", 3), ("instruction", 2), ("output", 2)],
            [("system", 2), ("instruction", 1), ("output", 5)],
            [("system", 1), ("image", 2), ("instruction", 1), ("output", 1)],
        ],
        ["understanding", "generation", "understanding"],
    )


def _both(text: str) -> TaskPolicies:
    return TaskPolicies({"understanding": parse_policy(text), "generation": parse_policy(text)})


def test_the_aligned_band_reduces_both_tasks_image_tokens_in_the_same_layers():
    layout = _layout()
    plan = _both("aligned:start_layer=2:end_layer=4").plan(layout, 6)
    image = layout.image_mask()
    und = (layout.tasks == 0)[:, None] & image
    gen = (layout.tasks == 1)[:, None] & image
    for layer in range(6):
        roles = plan.roles[layer]
        inside = 2 <= layer < 4
        assert bool((roles[und] == (Role.INJECT if inside else Role.ACTIVE)).all()), layer
        assert bool((roles[gen] == (Role.BYPASS if inside else Role.ACTIVE)).all()), layer
        text = layout.text_mask()
        assert bool((roles[text] == Role.ACTIVE).all()), layer
    # The default band ends before the last layer, which stays full.
    default = _both("aligned:start_layer=1").plan(layout, 5)
    assert bool((default.roles[4][image] == Role.ACTIVE).all())
    assert bool((default.roles[3][gen] == Role.BYPASS).all())


@pytest.mark.parametrize(
    ("text", "layers", "message"),
    [
        ("aligned:start_layer=-1", 4, "aligned start_layer=-1 must be >= 0"),
        ("aligned:start_layer=2:end_layer=2", 4, "aligned end_layer=2 must be above"),
        ("aligned:start_layer=1:end_layer=9", 4, "aligned end_layer=9 is past the last layer"),
        ("aligned:start_layer=3", 4, "aligned start_layer=3 leaves no band"),
        ("aligned:start_layer=5", 4, "aligned start_layer=5 is out of range"),
    ],
)
def test_a_bad_band_is_refused_naming_it(text, layers, message):
    with pytest.raises(TokredError, match=message.replace("[", r"\[")):
        _both(text).plan(_layout(), layers)


def test_an_aligned_policy_needs_image_tokens():
    text_only = TokenLayout.from_spans(
        [[("system", 2), ("instruction", 2), ("output", 2)]], ["understanding"]
    )
    with pytest.raises(TokredError, match="aligned"):
        parse_policy("aligned").plan(text_only, 4)


@pytest.mark.parametrize(
    ("understanding", "generation", "expected"),
    [
        ("none", "none", (True,) * 6),
        ("hmgen:num_shallow=2", "hmgen:num_shallow=2", (True,) * 6),  # same BYPASS layers
        ("aligned:start_layer=2", "aligned:start_layer=2", (True, True, False, False, False, True)),
        ("himix:start_layer=3", "none", (True, True, True, False, False, False)),
        # A selection decides roles in the forward: no coincidence after it.
        ("fastv:layer=2", "none", (True, True, False, False, False, False)),
    ],
)
def test_layers_coincide_where_both_tasks_image_tokens_share_one_role(
    understanding, generation, expected
):
    policies = TaskPolicies(
        {"understanding": parse_policy(understanding), "generation": parse_policy(generation)}
    )
    assert coinciding_layers(policies, 6) == expected


def test_aligned_sharing_maps_both_groups_to_one_set_where_the_plans_coincide():
    policies = _both("aligned:start_layer=1:end_layer=3")
    sets = layer_projection_sets("aligned", policies, 4)
    assert sets == [
        ("image", "image"),
        ("understanding", "generation"),
        ("understanding", "generation"),
        ("image", "image"),
    ]
    for mode, expected in (("task", ("understanding", "generation")), ("modality", ("image",))):
        assert layer_projection_sets(mode, policies, 4) == [expected] * 4
    layout = _layout()
    assert torch.equal(projection_groups(layout, "aligned"), projection_groups(layout, "task"))

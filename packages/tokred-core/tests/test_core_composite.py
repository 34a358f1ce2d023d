"""TaskPolicies: one policy per task over a padded batch that mixes both tasks."""

import pytest
import torch
from tokred_core import Role, Task, TaskPolicies, TokenLayout, TokredError, build_policy
from tokred_core.policies import HMGenConfig, shallow_layers

L = 8


def mixed(padding_side="right"):
    return TokenLayout.from_spans(
        [
            [("system", 2), ("image", 6), ("instruction", 2), ("output", 2)],  # 12 tokens
            [("system", 2), ("instruction", 3), ("output", 5)],  # 10 tokens
            [("system", 1), ("image", 4), ("instruction", 1), ("output", 1)],  # 7 tokens
        ],
        ["understanding", "generation", "understanding"],
        padding_side=padding_side,
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_himix_plus_hmgen_over_a_mixed_padded_batch(side):
    layout = mixed(side)
    policies = TaskPolicies(
        {"understanding": "himix", Task.GENERATION: build_policy("hmgen", num_shallow=2)}
    )
    plan = policies.plan(layout, L)
    roles = plan.roles
    pad = ~layout.valid_mask()
    image = layout.image_mask()
    shallow = shallow_layers(HMGenConfig(num_shallow=2), L)
    assert pad.any()
    assert bool((roles[:, pad] == Role.DROPPED).all())
    for layer in range(L):
        und_image = image & (layout.tasks == Task.UNDERSTANDING)[:, None]
        gen_image = image & (layout.tasks == Task.GENERATION)[:, None]
        assert bool((roles[layer][und_image] == Role.INJECT).all())
        expected = Role.BYPASS if layer in shallow else Role.ACTIVE
        assert bool((roles[layer][gen_image] == expected).all())
        assert bool((roles[layer][layout.text_mask()] == Role.ACTIVE).all())


def test_missing_task_runs_unreduced_except_padding():
    layout = mixed()
    plan = TaskPolicies({"understanding": "himix"}).plan(layout, L)
    gen_row = plan.roles[:, 1]
    assert bool((gen_row[:, :10] == Role.ACTIVE).all())
    assert bool((gen_row[:, 10:] == Role.DROPPED).all())


def test_dynamic_selections_are_restricted_to_their_task_rows():
    layout = mixed()
    plan = TaskPolicies({"understanding": build_policy("fastv", layer=2, keep_ratio=0.5)}).plan(
        layout, L
    )
    (sel,) = plan.selections
    assert sel.candidates.shape == layout.segments.shape
    assert sel.candidates[1].sum() == 0 and sel.queries[1].sum() == 0
    assert torch.equal(sel.candidates[0], layout.image_mask()[0])
    resolved = plan.resolved_by_position()
    kept = ((resolved.roles[2] == Role.ACTIVE) & layout.image_mask()).sum(-1)
    assert kept.tolist() == [3, 5, 2]  # ceil(0.5*6), the generation output untouched, ceil(0.5*4)


def test_uniform_and_refusals():
    plan = TaskPolicies.uniform("hmgen").plan(mixed(), L)
    assert (plan.roles == Role.BYPASS).any()
    with pytest.raises(TokredError, match="policy 'himix' cannot serve generation"):
        TaskPolicies({"generation": "himix"})
    with pytest.raises(TokredError, match="cannot serve generation"):
        TaskPolicies.uniform("fastv")
    with pytest.raises(TokredError, match="unknown task 'vqa'"):
        TaskPolicies({"vqa": "none"})
    with pytest.raises(TokredError, match="unknown policy 'himixx'"):
        TaskPolicies({"understanding": "himixx"})

"""The `router` policy (mixture-of-depths): config errors, plan shapes, composition, cost."""

import math

import pytest
import torch
from tokred_core import (
    PRESETS,
    ReductionPlan,
    Role,
    Route,
    Task,
    TaskPolicies,
    TokenLayout,
    TokredError,
    build_policy,
    canonical_layout,
    parse_task_policies,
    plan_cost,
    policy_cost,
)
from tokred_core.policies import Router

MIXED = TokenLayout.from_spans(
    [
        [("system", 2), ("image", 7), ("instruction", 3), ("output", 2)],
        [("system", 1), ("instruction", 2), ("output", 9)],
        [("system", 1), ("image", 3), ("instruction", 1), ("output", 1)],
    ],
    ["understanding", "generation", "understanding"],
    padding_side="left",
)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"capacity": 0}, r"router capacity=0 must be in \(0, 1\]"),
        ({"capacity": "0"}, r"router capacity=0 must be in \(0, 1\]"),
        ({"capacity": -0.5}, r"router capacity=-0.5 must be in \(0, 1\]"),
        ({"capacity": 1.5}, r"router capacity=1.5 must be in \(0, 1\]"),
        ({"capacity": "nan"}, r"router capacity=nan must be in \(0, 1\]"),
        ({"capacity": "half"}, r"router.capacity='half' must be a number"),
        ({"start_layer": -1}, r"router start_layer=-1 must be >= 0"),
        ({"start_layer": 2, "end_layer": 2}, r"router end_layer=2 must be greater"),
        ({"width": 3}, r"unknown key 'width' for policy 'router'"),
    ],
)
def test_config_errors_are_one_line_naming_the_value(fields, match):
    with pytest.raises(TokredError, match=match) as err:
        build_policy("router", **fields)
    assert "\n" not in str(err.value)


def test_layers_out_of_range_are_refused_at_planning():
    with pytest.raises(TokredError, match="router end_layer=9 is out of range"):
        Router(end_layer=9).plan(MIXED, 4)
    with pytest.raises(TokredError, match="router start_layer=1 leaves no layer"):
        Router().plan(MIXED, 2)


def test_a_task_without_image_tokens_is_named():
    text_only = TokenLayout.from_spans([[("system", 2), ("output", 3)]], ["understanding"])
    with pytest.raises(TokredError, match=r"policy 'router' needs image tokens but sample 0"):
        Router().plan(text_only, 4)


def test_plan_routes_each_task_image_tokens_in_the_middle_layers():
    plan = TaskPolicies.uniform(Router(capacity=0.3)).plan(MIXED, 5)
    assert bool((plan.roles[:, MIXED.valid_mask()] == Role.ACTIVE).all())  # nothing decided yet
    assert plan.selections == ()
    assert plan.route_layers == (1, 2, 3)  # first and last layer stay full
    assert [(r.layer, r.task) for r in plan.routes] == [
        (layer, task) for layer in (1, 2, 3) for task in (Task.UNDERSTANDING, Task.GENERATION)
    ]
    image = MIXED.image_mask()
    for r in plan.routes:
        rows = MIXED.task_mask(r.task)[:, None]
        assert torch.equal(r.candidates, image & rows)
        assert r.capacity == 0.3


def test_composes_with_another_policy_on_the_other_task():
    policies = parse_task_policies(
        "understanding=hmgen:num_shallow=1,generation=router:capacity=0.5"
    )
    plan = policies.plan(MIXED, 5)
    assert {r.task for r in plan.routes} == {Task.GENERATION}
    assert not bool(plan.routes[0].candidates[MIXED.task_mask(Task.UNDERSTANDING)].any())
    und = MIXED.task_mask(Task.UNDERSTANDING)
    shallow = plan.roles[2][und]  # hmgen's one shallow layer of 5
    assert bool((shallow[MIXED.image_mask()[und]] == Role.BYPASS).all())
    assert policies.routed_layers(5) == {Task.GENERATION: [1, 2, 3]}


def test_resolved_plan_bypasses_the_unpicked_share_in_the_routed_layer_only():
    plan = TaskPolicies({"generation": Router(capacity=0.5, start_layer=2, end_layer=3)}).plan(
        MIXED, 4
    )
    resolved = plan.resolved_by_position()
    gen = MIXED.task_mask(Task.GENERATION)
    bypass = resolved.roles[2, 1] == Role.BYPASS
    # 9 image outputs, ceil(0.5 * 9) = 5 picked: the earliest, the other 4 BYPASS layer 2.
    assert int(bypass.sum()) == 4 and bool(bypass[-4:].all())
    others = [0, 1, 3]
    assert not bool((resolved.roles[others][:, gen] == Role.BYPASS).any())
    assert not bool((resolved.roles[:, ~gen] == Role.BYPASS).any())


def test_apply_route_and_full_layers():
    plan = Router(capacity=0.5).plan(MIXED, 4)
    route = plan.routes_at(1)[0]
    picked = torch.zeros_like(route.candidates)
    work = plan.clone()
    work.apply_route(route, picked)
    assert torch.equal(work.roles[1] == Role.BYPASS, route.candidates)
    assert torch.equal(work.roles[2], plan.roles[2])  # back in the next layer
    full = plan.with_full_layers([1])
    assert full.route_layers == (2,)
    with pytest.raises(TokredError, match="route layer 4 is out of range"):
        ReductionPlan(plan.roles, routes=(Route(4, Task.GENERATION, route.candidates, 0.5),))


@pytest.mark.parametrize("capacity", [0.25, 0.5, 1.0])
def test_cost_counts_the_capacity_and_the_routers(capacity):
    shape = PRESETS["vila-u-7b"]
    text, image = 20, 256
    layout = canonical_layout("generation", text, image)
    base = policy_cost("none", shape, layout)
    cost = policy_cost(Router(capacity=capacity), shape, layout)
    picked = math.ceil(capacity * image)
    d = shape.hidden_size
    for mine, full in zip(cost.layers, base.layers, strict=True):
        if 1 <= mine.layer < shape.num_layers - 1:
            assert mine.queries == mine.kv_tokens == text + picked
            assert mine.router == 2 * d * image
        else:
            assert mine.to_dict() == full.to_dict()
            assert mine.router == 0
    assert cost.components()["router"] == 2 * d * image * (shape.num_layers - 2)
    if capacity == 1.0:  # all picked: the routers are the only extra work
        assert cost.forward_flops == base.forward_flops + cost.components()["router"]
    else:
        assert cost.ratio_to(base) < 1.0


def test_cost_of_a_mixed_batch_counts_each_task_at_its_capacity():
    shape = PRESETS["vila-u-7b"]
    policies = TaskPolicies(
        {"understanding": Router(capacity=0.5), "generation": Router(capacity=0.25)}
    )
    plan = policies.plan(MIXED, shape.num_layers)
    report = plan_cost(plan, shape)
    # Per routed layer: text tokens + ceil(0.5 * 7) + ceil(0.25 * 9) + ceil(0.5 * 3).
    text = int(MIXED.text_mask().sum())
    assert report.layers[1].queries == text + 4 + 3 + 2
    assert report.layers[1].router == 2 * shape.hidden_size * (7 + 9 + 3)

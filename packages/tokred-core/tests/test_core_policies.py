"""Plan semantics of every policy, and the errors a policy config can raise."""

import math

import pytest
import torch
from tokred_core import Role, TokenLayout, TokredError, available_policies, build_policy
from tokred_core.policies import HMGenConfig, shallow_layers


def und(image=8, instruction=3, system=2, output=2, batch=1):
    spans = [("system", system), ("image", image), ("instruction", instruction), ("output", output)]
    return TokenLayout.from_spans([spans] * batch, ["understanding"] * batch)


def gen(image=8, instruction=3, system=2, batch=1):
    spans = [("system", system), ("instruction", instruction), ("output", image)]
    return TokenLayout.from_spans([spans] * batch, ["generation"] * batch)


def test_registry_lists_every_policy():
    assert set(available_policies()) >= {
        "none",
        "himix",
        "hmgen",
        "fastv",
        "pyramid_drop",
        "random_drop",
    }


def test_none_is_all_active():
    plan = build_policy("none").plan(und(), 4)
    assert plan.roles.shape == (4, 1, 15)
    assert bool((plan.roles == Role.ACTIVE).all()) and plan.selections == ()


def test_himix_injects_image_tokens_from_start_layer():
    layout = und()
    plan = build_policy("himix", start_layer=2).plan(layout, 5)
    image = layout.image_mask()[0]
    assert bool((plan.roles[:2] == Role.ACTIVE).all())
    for layer in range(2, 5):
        assert bool((plan.roles[layer, 0, image] == Role.INJECT).all())
        assert bool((plan.roles[layer, 0, ~image] == Role.ACTIVE).all())


def test_himix_default_is_published_himix():
    plan = build_policy("himix").plan(und(), 3)
    assert bool((plan.roles[0, 0, und().image_mask()[0]] == Role.INJECT).all())


@pytest.mark.parametrize(
    ("fields", "layers", "expected"),
    [
        ({"num_shallow": 3}, 32, [13, 15, 17]),
        ({"num_shallow": 3, "pattern": "contiguous"}, 32, [14, 15, 16]),
        ({"num_shallow": 5}, 28, [9, 11, 13, 15, 17]),
        ({"layers": [7, 3]}, 12, [3, 7]),
        ({"num_shallow": 0}, 32, []),
    ],
)
def test_hmgen_shallow_layer_placement(fields, layers, expected):
    policy = build_policy("hmgen", **fields)
    got = shallow_layers(policy.config, layers)
    assert got == expected
    if "layers" not in fields:  # automatic placement keeps the first and last layer full
        assert 0 not in got and layers - 1 not in got


def test_hmgen_roles_bypass_image_tokens_only_in_shallow_layers():
    layout = gen()
    plan = build_policy("hmgen", num_shallow=2).plan(layout, 8)
    shallow = shallow_layers(HMGenConfig(num_shallow=2), 8)
    image = layout.image_mask()[0]
    for layer in range(8):
        expect_image = Role.BYPASS if layer in shallow else Role.ACTIVE
        assert bool((plan.roles[layer, 0, image] == expect_image).all())
        assert bool((plan.roles[layer, 0, ~image] == Role.ACTIVE).all())


def test_hmgen_zero_shallow_layers_is_all_active_even_without_image_tokens():
    layout = TokenLayout.from_spans([[("system", 2), ("output", 2)]], ["understanding"])
    plan = build_policy("hmgen", num_shallow=0).plan(layout, 4)
    assert bool((plan.roles == Role.ACTIVE).all())


def test_hmgen_too_many_shallow_layers_is_refused():
    with pytest.raises(TokredError, match="needs 7 middle layers"):
        build_policy("hmgen", num_shallow=4).plan(gen(), 8)
    with pytest.raises(TokredError, match="needs 7 middle layers"):
        build_policy("hmgen", num_shallow=7, pattern="contiguous").plan(gen(), 8)
    build_policy("hmgen", num_shallow=6, pattern="contiguous").plan(gen(), 8)


def _image_active_per_layer(plan, layout):
    image = layout.image_mask()
    return [
        int(((plan.roles[layer] == Role.ACTIVE) & image).sum()) for layer in range(plan.num_layers)
    ]


def test_fastv_selection_and_resolved_plan_keep_ceil_ratio():
    layout = und(image=10)
    plan = build_policy("fastv", layer=2, keep_ratio=0.35).plan(layout, 5)
    (sel,) = plan.selections
    assert sel.layer == 1 and sel.keep_ratio == 0.35
    assert torch.equal(sel.candidates, layout.image_mask())
    # last_instruction: exactly the last instruction token queries.
    assert sel.queries.sum().item() == 1 and sel.queries[0, 2 + 10 + 2].item()
    # The unresolved plan is all ACTIVE; resolving keeps ceil(0.35 * 10) = 4 from layer 2.
    assert bool((plan.roles == Role.ACTIVE).all())
    resolved = plan.resolved_by_position()
    assert _image_active_per_layer(resolved, layout) == [10, 10, 4, 4, 4]
    assert resolved.selections == ()
    # Text is never dropped.
    assert bool((resolved.roles[:, layout.text_mask()] == Role.ACTIVE).all())


def test_fastv_prompt_queries():
    layout = und()
    sel = build_policy("fastv", query="prompt").plan(layout, 4).selections[0]
    assert torch.equal(sel.queries, layout.prompt_mask())


def test_pyramid_drop_default_quarters_and_staged_keeps():
    layout = und(image=16)
    plan = build_policy("pyramid_drop").plan(layout, 8)
    assert [s.layer for s in plan.selections] == [1, 3, 5]
    assert _image_active_per_layer(plan.resolved_by_position(), layout) == [
        16,
        16,
        8,
        8,
        4,
        4,
        2,
        2,
    ]


def test_pyramid_drop_explicit_boundaries_round_up():
    layout = und(image=7)
    plan = build_policy("pyramid_drop", boundaries="1,3", keep_ratio=0.5).plan(layout, 4)
    # ceil(0.5 * 7) = 4, then ceil(0.5 * 4) = 2.
    assert _image_active_per_layer(plan.resolved_by_position(), layout) == [7, 4, 4, 2]


def test_random_drop_is_deterministic_per_seed_and_keeps_ceil_ratio():
    layout = und(image=20, batch=3)
    a = build_policy("random_drop", layer=1, keep_ratio=0.3, seed=7).plan(layout, 4)
    b = build_policy("random_drop", layer=1, keep_ratio=0.3, seed=7).plan(layout, 4)
    c = build_policy("random_drop", layer=1, keep_ratio=0.3, seed=8).plan(layout, 4)
    assert torch.equal(a.roles, b.roles)
    assert not torch.equal(a.roles, c.roles)
    image = layout.image_mask()
    assert bool((a.roles[0] == Role.ACTIVE).all())
    for layer in range(1, 4):
        kept = ((a.roles[layer] == Role.ACTIVE) & image).sum(-1)
        assert kept.tolist() == [math.ceil(0.3 * 20)] * 3
        assert bool((a.roles[layer][~image] == Role.ACTIVE).all())
    # The same tokens stay dropped in every later layer.
    assert torch.equal(a.roles[1], a.roles[3])


@pytest.mark.parametrize(
    ("name", "fields", "match"),
    [
        ("nope", {}, "unknown policy 'nope'"),
        ("himix", {"start": 1}, "unknown key 'start' for policy 'himix'"),
        ("hmgen", {"num_shallow": "three"}, "num_shallow='three' must be an integer"),
        ("hmgen", {"pattern": "zigzag"}, "pattern='zigzag' must be one of"),
        ("hmgen", {"num_shallow": -1}, "num_shallow=-1 must be >= 0"),
        ("hmgen", {"layers": "3,3"}, "names a layer twice"),
        ("fastv", {"keep_ratio": "lots"}, "keep_ratio='lots' must be a number"),
        ("fastv", {"keep_ratio": 1.5}, "must be a number in \\[0, 1\\]"),
        ("fastv", {"layer": 0}, "layer=0 must be >= 1"),
        ("fastv", {"query": "all"}, "query='all' must be one of"),
        ("pyramid_drop", {"boundaries": "4,2"}, "strictly increasing"),
        ("random_drop", {"seed": True}, "seed=True must be an integer"),
        ("himix", {"start_layer": -2}, "must be >= 0"),
    ],
)
def test_config_errors(name, fields, match):
    with pytest.raises(TokredError, match=match):
        build_policy(name, **fields)


def test_string_values_are_coerced():
    assert build_policy("hmgen", num_shallow="5", layers="none").config.num_shallow == 5
    assert build_policy("hmgen", layers="[2, 4]").config.layers == [2, 4]
    assert build_policy("fastv", keep_ratio="0.25").config.keep_ratio == 0.25


@pytest.mark.parametrize(
    ("name", "fields", "match"),
    [
        ("himix", {"start_layer": 4}, "start_layer=4 is out of range: the model has 4 layers"),
        ("hmgen", {"layers": [1, 4]}, "hmgen layer=4 is out of range"),
        ("fastv", {"layer": 4}, "fastv layer=4 is out of range"),
        ("pyramid_drop", {"boundaries": [2, 4]}, "boundary=4 is out of range"),
        ("random_drop", {"layer": 9}, "random_drop layer=9 is out of range"),
    ],
)
def test_layer_past_the_last_layer(name, fields, match):
    layout = gen() if name == "hmgen" else und()
    with pytest.raises(TokredError, match=match):
        build_policy(name, **fields).plan(layout, 4)


@pytest.mark.parametrize("name", ["himix", "fastv", "pyramid_drop", "random_drop", "hmgen"])
def test_policies_needing_image_tokens_name_the_sample(name):
    layout = TokenLayout.from_spans(
        [[("image", 2), ("instruction", 1), ("output", 1)], [("instruction", 2), ("output", 1)]],
        ["understanding", "understanding"],
    )
    with pytest.raises(TokredError, match="needs image tokens but sample 1 has none"):
        build_policy(name).plan(layout, 8)


@pytest.mark.parametrize("name", ["himix", "fastv", "pyramid_drop", "random_drop"])
def test_understanding_only_policies_refuse_generation(name):
    with pytest.raises(TokredError, match=f"policy '{name}' does not support generation"):
        build_policy(name).plan(gen(), 8)


def test_num_layers_must_be_positive():
    with pytest.raises(TokredError, match="num_layers=0"):
        build_policy("none").plan(und(), 0)


def test_random_drop_of_a_sample_does_not_depend_on_its_batch():
    from tokred_core import Role, TokenLayout
    from tokred_core.policies import RandomDrop

    spans = [("system", 2), ("image", 11), ("instruction", 3), ("output", 2)]
    alone = TokenLayout.from_spans([spans], ["understanding"])
    batch = TokenLayout.from_spans(
        [[("system", 1), ("image", 30), ("instruction", 1), ("output", 1)], spans],
        ["understanding", "understanding"],
        padding_side="left",
    )
    policy = RandomDrop(layer=0, keep_ratio=0.4, seed=3)
    dropped_alone = policy.plan(alone, 2).roles[0, 0] == Role.DROPPED
    row = batch.segments[1] != 4  # the sample's own tokens inside the left-padded batch
    dropped_batch = policy.plan(batch, 2).roles[0, 1][row] == Role.DROPPED
    assert dropped_alone.tolist() == dropped_batch.tolist()
    assert int(dropped_alone.sum()) == 11 - 5  # ceil(0.4 * 11) = 5 kept


def test_errors_name_the_sample_index_of_the_whole_batch():
    import pytest
    from tokred_core import TaskPolicies, TokenLayout, TokredError

    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("instruction", 2), ("output", 3)],
            [("system", 1), ("instruction", 2), ("output", 2)],
        ],
        ["generation", "understanding"],
    )
    with pytest.raises(TokredError, match="sample 1 has none"):
        TaskPolicies({"understanding": "himix"}).plan(layout, 4)


def test_fastv_on_a_one_layer_model_says_it_needs_two_layers():
    import pytest
    from tokred_core import TokenLayout, TokredError, build_policy

    layout = TokenLayout.from_spans(
        [[("system", 1), ("image", 4), ("instruction", 2), ("output", 1)]], ["understanding"]
    )
    with pytest.raises(TokredError, match="1-layer model has no valid fastv layer .*at least 2"):
        build_policy("fastv").plan(layout, 1)

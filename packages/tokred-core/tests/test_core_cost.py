"""The cost model: hand counts, the paper's closed forms, and orderings that must hold."""

import math

import pytest
import torch
from tokred_core import (
    PRESETS,
    DecoderShape,
    ReductionPlan,
    Role,
    TaskPolicies,
    TokenLayout,
    TokredError,
    build_policy,
    canonical_layout,
    canonical_spans,
    plan_cost,
    policy_cost,
)
from tokred_core.cost import TRAINING_FLOPS_FACTOR

A, INJ, B, D = (int(r) for r in (Role.ACTIVE, Role.INJECT, Role.BYPASS, Role.DROPPED))
# d=8, ffn=16, H=2, KV=1, head_dim=4, gated.
TINY = DecoderShape(hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2, num_kv_heads=1)


def hand_plan():
    return ReductionPlan(torch.tensor([[[A, A, A, A, A]], [[A, INJ, B, A, D]]], dtype=torch.int8))


def test_hand_computed_flops_exact():
    report = plan_cost(hand_plan(), TINY, "exact")
    l0, l1 = report.layers
    # Layer 0: 5 queries, 5 kv, causal pairs 1+2+3+4+5 = 15.
    assert (l0.queries, l0.kv_tokens, l0.attention_pairs) == (5, 5, 15)
    assert l0.q_proj == 2 * 8 * 8 * 5 == 640
    assert l0.o_proj == 640
    assert l0.kv_proj == 2 * 2 * 8 * 4 * 5 == 640
    assert l0.attention == 4 * 2 * 4 * 15 == 480
    assert l0.ffn == 2 * 3 * 8 * 16 * 5 == 3840
    assert l0.flops == 6240
    assert l0.paper_units == 5 * 5 * 8 + 8 * 5 * 64 == 2760
    # Layer 1: queries {0, 3}; kv {0, 1 (INJECT), 3}; BYPASS and DROPPED cost nothing.
    # Pairs: query 0 sees {0}, query 3 sees {0, 1, 3}.
    assert (l1.queries, l1.kv_tokens, l1.attention_pairs) == (2, 3, 4)
    assert (l1.q_proj, l1.kv_proj, l1.attention, l1.o_proj, l1.ffn) == (256, 384, 128, 256, 1536)
    assert l1.flops == 2560
    assert l1.paper_units == 2 * 3 * 8 + 8 * 2 * 64 == 1072
    assert report.forward_flops == 8800
    assert report.training_flops == TRAINING_FLOPS_FACTOR * 8800 == 26400
    assert report.paper_units == 3832
    assert report.components() == {
        "q_proj": 896,
        "kv_proj": 1024,
        "attention": 608,
        "o_proj": 896,
        "ffn": 5376,
        "router": 0,
    }


def test_hand_computed_flops_dense_and_plain_ffn():
    dense = plan_cost(hand_plan(), TINY, "dense")
    assert [layer.attention_pairs for layer in dense.layers] == [25, 6]
    assert dense.forward_flops == 8800 - 480 - 128 + 32 * 25 + 32 * 6
    plain = DecoderShape(8, 16, 2, 2, 1, gated_ffn=False)
    assert [layer.ffn for layer in plan_cost(hand_plan(), plain).layers] == [2560, 1024]


def test_report_dict_and_layer_dicts():
    d = plan_cost(hand_plan(), TINY).to_dict()
    assert d["forward_flops"] == 8800 and d["causal"] == "exact"
    assert d["per_layer"][1]["flops"] == 2560 and d["per_layer"][1]["kv_tokens"] == 3
    assert any("not counted" in n for n in d["notes"])


def test_plan_cost_errors():
    with pytest.raises(TokredError, match="plan has 2 layers but the decoder shape has 4"):
        plan_cost(hand_plan(), PRESETS["tiny"])
    with pytest.raises(TokredError, match="causal='causal' must be one of exact, dense"):
        plan_cost(hand_plan(), TINY, "causal")
    with pytest.raises(TokredError, match="same shape and causal convention"):
        plan_cost(hand_plan(), TINY, "exact").ratio_to(plan_cost(hand_plan(), TINY, "dense"))


def test_canonical_spans():
    def counts(task, t, m):
        return [(s.name.lower(), n) for s, n in canonical_spans(task, t, m)]

    assert counts("understanding", 80, 256) == [
        ("system", 20),
        ("image", 256),
        ("instruction", 20),
        ("output", 40),
    ]
    assert counts("generation", 80, 256) == [("system", 20), ("instruction", 60), ("output", 256)]
    assert counts("understanding", 1, 3) == [
        ("system", 0),
        ("image", 3),
        ("instruction", 0),
        ("output", 1),
    ]
    layout = canonical_layout("generation", 10, 7)
    assert layout.batch_size == 1 and layout.seq_len == 17
    assert int(layout.image_mask().sum()) == 7 and int(layout.text_mask().sum()) == 10
    for bad in (0, -3, True, 2.0):
        with pytest.raises(TokredError, match="must be a positive integer"):
            canonical_spans("understanding", bad, 4)
        with pytest.raises(TokredError, match="image_tokens="):
            canonical_spans("generation", 4, bad)


SHAPES = [PRESETS["vila-u-7b"], PRESETS["llama-3.2-3b"], PRESETS["tiny"]]
SIZES = [(80, 256), (40, 576), (7, 3), (128, 1024)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s.hidden_size}")
@pytest.mark.parametrize("causal", ["exact", "dense"])
def test_none_costs_ratio_one(shape, causal):
    layout = canonical_layout("understanding", 80, 256)
    base = policy_cost("none", shape, layout, causal)
    assert base.ratio_to(base) == 1.0 and base.paper_ratio_to(base) == 1.0


@pytest.mark.parametrize(("t", "m"), SIZES)
def test_himix_paper_ratio_is_t_over_t_plus_m_and_full_count_is_higher(t, m):
    for shape in SHAPES:
        layout = canonical_layout("understanding", t, m)
        for causal in ("exact", "dense"):
            base = policy_cost("none", shape, layout, causal)
            himix = policy_cost("himix", shape, layout, causal)
            assert himix.paper_ratio_to(base) == pytest.approx(t / (t + m), rel=1e-12)
            # Exact: the integers themselves match the closed forms.
            d = shape.hidden_size
            n = t + m
            assert base.paper_units == shape.num_layers * (n * n * d + 8 * n * d * d)
            assert himix.paper_units == shape.num_layers * (t * n * d + 8 * t * d * d)
            # The full count also pays for the image K/V at every layer.
            assert himix.ratio_to(base) > himix.paper_ratio_to(base)


def test_himix_full_count_charges_image_kv_every_layer():
    shape = PRESETS["vila-u-7b"]
    layout = canonical_layout("understanding", 80, 256)
    himix = policy_cost("himix", shape, layout)
    base = policy_cost("none", shape, layout)
    assert himix.components()["kv_proj"] == base.components()["kv_proj"]
    assert himix.components()["ffn"] * 336 == base.components()["ffn"] * 80


@pytest.mark.parametrize(("t", "m"), SIZES)
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_hmgen_paper_ratio_matches_the_paper_formula(t, m, k):
    shape = PRESETS["llama-3.2-3b"]
    layout = canonical_layout("generation", t, m)
    base = policy_cost("none", shape, layout)
    hmgen = policy_cost(build_policy("hmgen", num_shallow=k), shape, layout)
    d, n, big_l = shape.hidden_size, t + m, shape.num_layers
    full = n * n * d + 8 * n * d * d
    shallow = t * t * d + 8 * t * d * d
    assert hmgen.paper_units == (big_l - k) * full + k * shallow
    assert hmgen.paper_ratio_to(base) == pytest.approx(
        ((big_l - k) * full + k * shallow) / (big_l * full)
    )
    if k == 0:
        assert hmgen.ratio_to(base) == 1.0 and hmgen.paper_ratio_to(base) == 1.0
    else:
        assert hmgen.ratio_to(base) < 1.0


def test_fastv_cost_is_monotone_in_keep_ratio():
    shape = PRESETS["vila-u-7b"]
    layout = canonical_layout("understanding", 80, 256)
    base = policy_cost("none", shape, layout)
    ratios = [
        policy_cost(build_policy("fastv", layer=2, keep_ratio=r), shape, layout).ratio_to(base)
        for r in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    ]
    assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    assert ratios[-1] == 1.0


def test_fastv_cost_equals_the_explicitly_dropped_plan():
    shape = PRESETS["tiny"]
    layout = canonical_layout("understanding", 8, 10)
    got = policy_cost(build_policy("fastv", layer=2, keep_ratio=0.3), shape, layout)
    roles = torch.zeros(4, 1, 18, dtype=torch.int8)
    image = layout.image_mask()[0].nonzero().flatten()
    roles[2:, 0, image[math.ceil(0.3 * 10) :]] = D  # the earliest 3 image tokens stay
    assert got.layers == plan_cost(ReductionPlan(roles), shape).layers


def test_padding_costs_nothing_and_batches_add_up():
    shape = PRESETS["tiny"]
    spans = [
        [("system", 2), ("image", 6), ("instruction", 2), ("output", 2)],
        [("system", 1), ("image", 3), ("instruction", 1), ("output", 1)],
    ]
    padded = TokenLayout.from_spans(spans, ["understanding"] * 2, length=16, padding_side="left")
    singles = [TokenLayout.from_spans([s], ["understanding"]) for s in spans]
    for causal in ("exact", "dense"):
        for policy in ("none", "himix", build_policy("pyramid_drop")):
            batch = policy_cost(policy, shape, padded, causal)
            alone = [policy_cost(policy, shape, single, causal) for single in singles]
            assert batch.forward_flops == sum(r.forward_flops for r in alone)
            assert batch.paper_units == sum(r.paper_units for r in alone)
        composed = policy_cost(TaskPolicies({"understanding": "himix"}), shape, padded, causal)
        assert composed.layers == policy_cost("himix", shape, padded, causal).layers


def test_unified_batch_cost_with_both_accelerators():
    shape = PRESETS["tiny"]
    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("image", 8), ("instruction", 2), ("output", 4)],
            [("system", 2), ("instruction", 6), ("output", 8)],
        ],
        ["understanding", "generation"],
    )
    joint = TaskPolicies(
        {"understanding": "himix", "generation": build_policy("hmgen", num_shallow=1)}
    )
    base = policy_cost("none", shape, layout)
    cost = policy_cost(joint, shape, layout)
    assert 0 < cost.ratio_to(base) < 1
    with pytest.raises(TokredError, match="does not support generation"):
        policy_cost("himix", shape, layout)

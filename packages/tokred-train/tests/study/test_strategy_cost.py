"""The cost of each strategy (issue 10) against a count by hand on a tiny config: full
steps, distillation, PCGrad's per-task sub-batches, gating from gate.jsonl, and a priced
stretch of steps standing for a longer run."""

from __future__ import annotations

import json
import math

import pytest
from tokred_core import DecoderShape, TaskPolicies, TokredError, parse_policy, plan_cost
from tokred_train import load_config
from tokred_train.built_run import build_train_data
from tokred_train.study.gate import GATE_FILE, GateTimeline, read_gate
from tokred_train.study.runner import FLOPS_BATCHES, RunRecord
from tokred_train.study.strategy_cost import is_full_step, run_flops
from tokred_train.testing import tiny_run_config

SHAPE = DecoderShape(
    hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, num_kv_heads=4
)
POLICIES = TaskPolicies(
    {"understanding": parse_policy("himix"), "generation": parse_policy("hmgen:num_shallow=1")}
)
STEPS = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = tiny_run_config(tmp_path_factory.mktemp("unused"), optim={"max_steps": STEPS})
    return config, build_train_data(config)


def _with(config, *overrides):
    return load_config(config, list(overrides))


def _by_hand(data, config, step, policies, *, per_task=False):
    """Per layer, forward FLOPs of step `step`'s micro-batches, read off the sampler and
    the cost model directly."""
    from tokred_train.run.sampler import MixedBatchSampler

    sampler = MixedBatchSampler(
        data.sizes(), config.data.understanding_ratio, config.optim.batch_size, config.run.seed
    )
    accum = config.optim.grad_accum
    per_layer = [0] * SHAPE.num_layers
    for micro in range((step - 1) * accum, step * accum):
        parts = {t: i for t, i in sampler.draw(micro).items() if len(i)}
        batches = [{t: i} for t, i in parts.items()] if per_task else [parts]
        for batch in batches:
            layout = data.collate(batch)["layout"]
            report = plan_cost(policies.plan(layout, SHAPE.num_layers), SHAPE)
            per_layer = [a + b.flops for a, b in zip(per_layer, report.layers, strict=True)]
    return per_layer


def _hand(data, config, steps=STEPS, per_task=False):
    reduced = [_by_hand(data, config, s, POLICIES, per_task=per_task) for s in range(1, steps + 1)]
    full = [
        _by_hand(data, config, s, TaskPolicies(), per_task=per_task) for s in range(1, steps + 1)
    ]
    return reduced, full


def test_the_full_step_rule_spreads_floor_n_p_full_steps():
    for p in (0.0, 0.1, 0.25, 1 / 3, 0.5, 1.0):
        full = [s for s in range(1, 101) if is_full_step(s, p)]
        assert len(full) == math.floor(100 * p)
    assert [s for s in range(1, 11) if is_full_step(s, 0.2)] == [5, 10]


def test_a_plain_run_prices_its_reduction(tiny):
    config, data = tiny
    reduced, full = _hand(data, config)
    got = run_flops(data, config, POLICIES, SHAPE, STEPS, FLOPS_BATCHES)
    assert got.forward_flops == got.reduced_flops == sum(map(sum, reduced))
    assert got.unreduced_flops == sum(map(sum, full)) > got.forward_flops
    assert (got.full_steps, got.distill_steps, got.gated_layer_steps) == (0, 0, 0)


def test_full_steps_price_unreduced_and_distilled_steps_add_the_reduced_pass(tiny):
    config, data = tiny
    reduced, full = _hand(data, config)
    full_at = {2, 4, 6}  # p = 1/2 over 6 steps: floor(s/2) changes at 2, 4 and 6
    plain = _with(config, "strategy.full_steps=0.5")
    got = run_flops(data, plain, POLICIES, SHAPE, STEPS, FLOPS_BATCHES)
    want = sum(sum(full[s - 1] if s in full_at else reduced[s - 1]) for s in range(1, 7))
    assert (got.forward_flops, got.full_steps, got.distill_steps) == (want, 3, 0)
    distilled = _with(plain, "strategy.distill=1")
    got = run_flops(data, distilled, POLICIES, SHAPE, STEPS, FLOPS_BATCHES)
    assert got.forward_flops == want + sum(sum(reduced[s - 1]) for s in full_at)
    assert got.distill_steps == 3


def test_pcgrad_prices_each_task_as_its_own_sub_batch(tiny):
    config, data = tiny
    reduced, _ = _hand(data, config, per_task=True)
    got = run_flops(data, _with(config, "strategy.surgery=pcgrad"), POLICIES, SHAPE, STEPS, 50)
    assert got.per_task_sub_batches and got.forward_flops == sum(map(sum, reduced))
    # The same samples: padding costs nothing, so the same FLOPs as the mixed batches.
    assert got.forward_flops == run_flops(data, config, POLICIES, SHAPE, STEPS, 50).forward_flops


def test_gated_layers_run_unreduced_from_the_step_after_their_row(tiny, tmp_path):
    config, data = tiny
    reduced, full = _hand(data, config)
    rows = [
        {"step": 0, "full_layers": []},
        {"step": 2, "full_layers": [0, 2]},
        {"step": 4, "full_layers": [0]},  # layer 0 only, from step 5 on
    ]
    (tmp_path / GATE_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    gate = read_gate(tmp_path, SHAPE.num_layers)
    gating = _with(config, "run.conflict_every=2", "strategy.gate_threshold=0.0")
    got = run_flops(data, gating, POLICIES, SHAPE, STEPS, FLOPS_BATCHES, gate=gate)
    layers = {1: set(), 2: set(), 3: {0, 2}, 4: {0, 2}, 5: {0}, 6: {0}}
    want = sum(
        full[s - 1][i] if i in layers[s] else reduced[s - 1][i]
        for s in range(1, 7)
        for i in range(SHAPE.num_layers)
    )
    assert got.forward_flops == want and got.gated_layer_steps == 2 + 2 + 1 + 1


def test_a_resumed_gate_history_keeps_the_attempt_that_trained():
    rows = [
        {"step": 0, "full_layers": []},
        {"step": 4, "full_layers": [1]},
        {"step": 8, "full_layers": [1, 2]},  # written, then the run stopped and resumed
        {"step": 4, "full_layers": [2]},  # from a checkpoint before step 4
    ]
    gate = GateTimeline.from_rows(rows, 3)
    assert [gate.full_layers_at(s) for s in (1, 4, 5, 9)] == [set(), set(), {2}, {2}]
    with pytest.raises(TokredError, match="outside the model's 3"):
        GateTimeline.from_rows([{"step": 0, "full_layers": [3]}], 3)


def test_a_gating_run_without_its_gate_file_is_refused(tmp_path):
    with pytest.raises(TokredError, match="gate.jsonl is missing"):
        read_gate(tmp_path, 3)


def test_the_priced_steps_stand_for_the_rest_of_the_run(tiny):
    config, data = tiny
    reduced, full = _hand(data, config, steps=2)
    run = _with(config, "optim.max_steps=8", "strategy.full_steps=0.25")
    got = run_flops(data, run, POLICIES, SHAPE, 8, 2)
    # Step s takes priced step (s - 1) % 2 + 1's batches; steps 4 and 8 are full.
    want = sum(sum(full[(s - 1) % 2] if s in (4, 8) else reduced[(s - 1) % 2]) for s in range(1, 9))
    assert (got.forward_flops, got.priced_steps, got.steps, got.full_steps) == (want, 2, 8, 2)


def test_flops_compare_per_step_with_records_from_before_strategies():
    old = RunRecord("baseline", "unified", 0, {}, {}, 1.0, 1.0, None, 50 * 7, 1100)
    new = RunRecord("a", "unified", 0, {}, {}, 1.0, 1.0, None, 1100 * 7, 1100)
    new.flops_detail = {"steps": 1100}
    assert old.flops_per_step == new.flops_per_step == 7

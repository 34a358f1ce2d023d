"""The synergy-aware training strategies (config/strategy.py) against references:
mixed full-token steps, self-distillation, PCGrad and the conflict gate."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from tokred_core import Role, TaskPolicies
from tokred_train import train
from tokred_train.config import StrategyConfig
from tokred_train.run.full_steps import StepPlanner, is_full_step
from tokred_train.run.gate import GATE_FILE, ConflictGate
from tokred_train.run.loop import Trainer
from tokred_train.run.losses import head_logits
from tokred_train.run.micro_batch import micro_batch
from tokred_train.run.step import DISTILL_KEY, PREPARED_KEY, TrainStep, batch_targets
from tokred_train.run.surgery import pcgrad_combine
from tokred_train.testing import HIMIX_HMGEN, tiny_run_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.9, 1.0])
def test_full_steps_are_evenly_spaced_and_exact(fraction):
    full = 0
    for step in range(1, 301):
        full += is_full_step(step, fraction)
        assert full == math.floor(step * Fraction(str(fraction))), (fraction, step)


def _flat(grads):
    return torch.cat([g.double().flatten() for g in grads])


def _reference_pcgrad(a, b):
    """PCGrad on two flat float64 vectors, as the paper writes it."""
    dot = a @ b
    if dot >= 0:
        return a + b
    return (a - dot / (b @ b) * b) + (b - dot / (a @ a) * a)


@pytest.mark.parametrize("conflict", [True, False])
def test_pcgrad_combine_matches_the_reference_on_odd_shapes(conflict):
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 5), (7,), (2, 3, 1), (1,)]
    first = [torch.randn(s, generator=gen) for s in shapes]
    sign = -1.0 if conflict else 1.0
    second = [sign * 0.7 * g + 0.3 * torch.randn(g.shape, generator=gen) for g in first]
    out = pcgrad_combine(first, second)
    assert [o.shape for o in out] == [torch.Size(s) for s in shapes]
    expected = _reference_pcgrad(_flat(first), _flat(second))
    torch.testing.assert_close(_flat(out), expected, rtol=1e-5, atol=1e-6)
    if conflict:  # projected: neither task's part pulls against the other any more
        a, b = _flat(first), _flat(second)
        a2 = a - (a @ b) / (b @ b) * b
        assert abs(float(a2 @ b)) < 1e-6 * float(a.norm() * b.norm())


def test_pcgrad_combine_passes_through_a_gradient_only_one_task_has():
    a = [torch.tensor([1.0, 0.0]), torch.tensor([2.0]), None]
    b = [torch.tensor([-1.0, 1.0]), None, torch.tensor([5.0])]
    out = pcgrad_combine(a, b)
    # The conflict is measured over the parameters both reach (the first only).
    expected = _reference_pcgrad(
        torch.tensor([1.0, 0.0]).double(), torch.tensor([-1.0, 1.0]).double()
    )
    torch.testing.assert_close(out[0].double(), expected)
    assert torch.equal(out[1], torch.tensor([2.0])) and torch.equal(out[2], torch.tensor([5.0]))
    assert pcgrad_combine([None], [None]) == [None]


def _cfg(tmp_path, name="run", **sections):
    sections.setdefault("reduction", HIMIX_HMGEN)
    return tiny_run_config(tmp_path / name, **sections)


def test_a_pcgrad_step_applies_the_projected_sum_of_the_task_gradients(tmp_path):
    cfg = _cfg(
        tmp_path,
        strategy={"surgery": "pcgrad"},
        optim={"clip_norm": 0, "grad_accum": 2, "batch_size": 3},
        data={"understanding_ratio": 0.5},
    )
    trainer = Trainer(cfg)
    s = trainer.setup
    names = [n for n, p in s.run.model.named_parameters() if p.requires_grad]
    captured = {}

    def capture(optimizer, args, kwargs):
        captured.update({n: p.grad.clone() for n, p in zip(names, s.params, strict=True)})

    s.optimizer.register_step_pre_hook(capture)
    micros = [
        mb for m in range(2) for mb in micro_batch(s.data, s.sampler, m, cfg.data.train_tasks)
    ]
    # Reference: each task's gradient of the step's token-mean loss, from the same weights.
    total = sum(sum(t.counts) for _, t, _ in micros)
    step = TrainStep(s.run.built.base, s.data.loss_path)
    per_task = []
    for task in ("understanding", "generation"):
        step.zero_grad(set_to_none=True)
        for m in range(2):
            parts = {task: s.sampler.draw(m)[task]}
            if len(parts[task]):
                batch = s.data.collate(parts)
                (step(batch, batch_targets(batch, s.data.loss_path)).sum() / total).backward()
        per_task.append([p.grad.clone() if p.grad is not None else None for p in s.params])
    s.optimizer.zero_grad(set_to_none=True)
    a, b = (
        _flat(
            [
                g if g is not None else torch.zeros_like(p)
                for g, p in zip(grads, s.params, strict=True)
            ]
        )
        for grads in per_task
    )
    assert float(a @ b) != 0.0
    split = [
        mb
        for m in range(2)
        for mb in micro_batch(
            s.data, s.sampler, m, cfg.data.train_tasks, trainer.planner, split=True
        )
    ]
    trainer.train_step(1, split)
    got = _flat([captured[n] for n in names])
    torch.testing.assert_close(got, _reference_pcgrad(a, b), rtol=1e-4, atol=1e-7)


def _prepared(handle, batch, policies=None):
    return handle.prepare(batch["layout"], batch["attention_mask"], policies=policies)


def test_the_distillation_term_is_the_kl_from_the_full_pass_to_the_reduced_one(tmp_path):
    built = train(_cfg(tmp_path), stop_after_step=0)
    handle, data = built.run.handle, built.data
    batch = data.collate({"understanding": [0, 1], "generation": [0, 2]})
    targets = batch_targets(batch, data.loss_path)
    weight, temperature = 0.7, 2.0
    step = TrainStep(built.built.base, data.loss_path, weight, temperature)
    full = {**batch, PREPARED_KEY: _prepared(handle, batch, TaskPolicies())}
    both = {**full, DISTILL_KEY: _prepared(handle, batch)}
    out = step(both, targets)
    assert out.shape == (4,)
    plain = TrainStep(built.built.base, data.loss_path)
    torch.testing.assert_close(out[:2], plain(full, targets))
    # Reference: the two passes' logits at the targets, KL by torch's own kl_div.
    decoder = step._parts[0]
    head = built.built.base.get_output_embeddings()

    def logits(layout):
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            tokred_layout=layout, use_cache=False,
        ).last_hidden_state  # fmt: skip
        return head_logits(hidden, targets.text, head).float() / temperature

    teacher, student = logits(full[PREPARED_KEY]), logits(both[DISTILL_KEY])
    kl = F.kl_div(
        F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="none"
    ).sum(-1)
    expected = torch.zeros(2).index_add_(0, targets.text.tasks, kl) * weight * temperature**2
    torch.testing.assert_close(out[2:], expected, rtol=1e-5, atol=1e-6)
    assert (out[2:] > 0).all()
    # The full pass is the teacher: the term's gradient reaches the weights only through
    # the reduced pass, so distilling a pass into itself gives zero loss and zero gradient.
    same = {**full, DISTILL_KEY: full[PREPARED_KEY]}
    step.zero_grad(set_to_none=True)
    term = step(same, targets)[2:].sum()
    assert float(term) == pytest.approx(0.0, abs=1e-6)
    term.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) < 1e-6 for p in step.parameters())


def _reduced(roles):
    """Tokens a layer reduces (padding is DROPPED in every plan)."""
    return (roles == Role.INJECT) | (roles == Role.BYPASS)


def test_the_planner_runs_full_steps_unreduced_and_distils_on_them(tmp_path):
    built = train(_cfg(tmp_path), stop_after_step=0)
    handle, data = built.run.handle, built.data
    planner = StepPlanner(handle, StrategyConfig(full_steps=0.5, distill=1.0), grad_accum=2)
    for micro in range(8):
        batch = data.collate({"understanding": [0, 1], "generation": [3]})
        planner.prepare(batch, micro)
        full = is_full_step(micro // 2 + 1, 0.5)
        roles = batch[PREPARED_KEY].plan.roles
        assert (not _reduced(roles).any()) == full, micro
        assert (DISTILL_KEY in batch) == full
        if full:
            assert bool((batch[DISTILL_KEY].plan.roles == Role.INJECT).any())
    planner.full_layers = (1,)
    batch = data.collate({"understanding": [0], "generation": [1]})
    planner.prepare(batch, 0)  # step 1: reduced, with layer 1 gated to full
    roles = batch[PREPARED_KEY].plan.roles
    reference = handle.plan(batch["layout"]).roles
    assert not _reduced(roles[1]).any() and _reduced(reference[1]).any()
    assert torch.equal(roles[[0, 2]], reference[[0, 2]])
    planner.full_layers = ()
    planner.refresh([(batch, 0)])
    assert torch.equal(batch[PREPARED_KEY].plan.roles, reference)


def _rows(values):
    rows = [{"layer": i, "group": "total", "adjusted_cosine": v} for i, v in enumerate(values)]
    return rows + [{"layer": 0, "group": "mlp", "adjusted_cosine": -1.0}]


def test_the_gate_reduces_where_the_tasks_agree_with_hysteresis():
    gate = ConflictGate(threshold=0.0, hysteresis=0.1)
    assert not gate.update(_rows([-0.05, 0.05, 0.5]))  # inside the band: no change
    assert gate.update(_rows([-0.2, 0.05, None])) and gate.full_layers == (0,)
    assert not gate.update(_rows([0.05, -0.05, None]))  # recovering, but within the band
    assert gate.update(_rows([0.2, -0.3, -1.0])) and gate.full_layers == (1, 2)
    assert gate.row(7) == {"step": 7, "full_layers": [1, 2]}


def test_all_strategies_train_and_a_crashed_run_resumes_exactly(tmp_path):
    strategy = {"full_steps": 0.5, "distill": 1.0, "surgery": "pcgrad", "gate_threshold": 1.0}
    sections = dict(
        strategy=strategy,
        optim={"max_steps": 6, "grad_accum": 2, "batch_size": 3},
        eval={"at_end": False},
    )
    run = {"conflict_every": 2, "conflict_samples": 2}
    full = train(_cfg(tmp_path, "full", run={**run, "ckpt_every": 2}, **sections))
    gates = [json.loads(x) for x in (full.run_dir / GATE_FILE).read_text().splitlines()]
    # A threshold of 1 is above any measured agreement: every layer goes full at step 2.
    assert gates == [{"step": 0, "full_layers": []}, {"step": 2, "full_layers": [0, 1, 2]}]
    crashed_cfg = _cfg(tmp_path, "crash", run={**run, "ckpt_every": 2}, **sections)
    train(crashed_cfg, stop_after_step=3)
    resumed = train(crashed_cfg, overrides=["run.resume=true"])
    assert resumed.start_step == 2
    for mine, ref in zip(resumed.history, full.history[2:], strict=True):
        for key in ("loss", "loss_understanding", "loss_generation", "grad_norm"):
            assert mine[key] == pytest.approx(ref[key], abs=1e-6, rel=0), (mine["step"], key)
    again = [json.loads(x) for x in (resumed.run_dir / GATE_FILE).read_text().splitlines()]
    assert again == gates

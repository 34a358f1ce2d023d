"""run.conflict_every: the tasks' gradient conflict, measured during training.

The recorded numbers equal a direct computation (torch.autograd on the same probe, the
halves collated as mixed batches), measuring leaves training bit-identical, the groups
cover every trainable parameter once, and a resume rewrites the rows past its checkpoint.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from tokred_core import TokredError
from tokred_train import train
from tokred_train.run.conflict import (
    CONFLICT_FILE,
    TOTAL,
    ConflictProbe,
    layer_group,
    outer_group,
    parameter_groups,
    probe_halves,
)
from tokred_train.run.log import read_jsonl
from tokred_train.run.loop import Trainer
from tokred_train.run.step import TrainStep, batch_targets
from tokred_train.testing import (
    HIMIX_HMGEN,
    snapshot_parameters,
    tiny_run_config,
    torchrun_env,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

K = 8  # probe samples per task (the default)
TASKS = ("understanding", "generation")


def _config(tmp_path, name, **run):
    return tiny_run_config(
        tmp_path / name,
        reduction=HIMIX_HMGEN,
        optim={"max_steps": 4},
        run={"log_every": 1, **run},
        eval={"at_end": False},
    )


def _gradient(step_module, data, parts, params):
    """The token-mean loss gradient of one batch holding `parts` ({task: indices})."""
    batch = data.collate(parts)
    targets = batch_targets(batch, data.loss_path)
    loss = step_module(batch, targets).sum() / sum(targets.counts)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _cos(a, b):
    na, nb = a.norm(), b.norm()
    return None if na == 0 or nb == 0 else float(a @ b / (na * nb))


def _direct_rows(result):
    """{(layer, group): (cosine, adjusted cosine, norm ratio)} computed directly."""
    base = result.built.base
    step_module = TrainStep(base, result.data.loss_path)
    groups = parameter_groups(base)
    named = dict(base.named_parameters())
    params = [named[n] for n in groups]
    data = result.data
    sizes = data.sizes()
    grads = {
        t: _gradient(step_module, data, {t: list(range(min(K, sizes[t])))}, params) for t in TASKS
    }
    halves = [_gradient(step_module, data, h, params) for h in probe_halves(sizes, K, 0)]
    keys = {}
    for i, key in enumerate(groups.values()):
        for k in {key, (key[0], TOTAL), (None, TOTAL)}:  # a set: outside layers, two are one
            keys.setdefault(k, []).append(i)
    out = {}
    for key, members in keys.items():
        flat = [
            torch.cat([g[i].reshape(-1).double() for i in members])
            for g in (*grads.values(), *halves)
        ]
        u, g, a, b = flat
        cos, base_cos = _cos(u, g), _cos(a, b)
        ratio = None if g.norm() == 0 else float(u.norm() / g.norm())
        out[key] = (cos, None if cos is None else cos - base_cos, ratio)
    return out


def _close(a, b, tol=1e-5):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_recorded_numbers_equal_a_direct_computation(tmp_path):
    result = train(_config(tmp_path, "run", conflict_every=2))
    rows = [r for r in read_jsonl(result.run_dir / CONFLICT_FILE) if r["step"] == 4]
    direct = _direct_rows(result)  # on the final weights: what step 4 measured
    assert {(r["layer"], r["group"]) for r in rows} == set(direct)
    for r in rows:
        cos, adjusted, ratio = direct[(r["layer"], r["group"])]
        where = (r["layer"], r["group"])
        assert _close(r["cosine"], cos), where
        assert _close(r["adjusted_cosine"], adjusted), where
        assert _close(r["norm_ratio"], ratio), where
        assert _close(r["adjusted_cosine"], None if cos is None else cos - r["baseline_cosine"])
    # The reduced run's image projection sets: each reached by its own task only.
    own = {r["group"]: r for r in rows if r["layer"] == 0}
    assert own["image_proj.understanding"]["norm_generation"] == 0.0
    assert own["image_proj.understanding"]["norm_understanding"] > 0.0
    assert own["image_proj.generation"]["norm_understanding"] == 0.0
    assert own["image_proj.understanding"]["cosine"] is None


def test_measuring_leaves_training_unchanged(tmp_path):
    plain = train(_config(tmp_path, "plain"))
    measured = train(_config(tmp_path, "measured", conflict_every=2))
    keys = ("loss", "loss_understanding", "loss_generation", "grad_norm", "lr")
    assert [[h[k] for k in keys] for h in measured.history] == [
        [h[k] for k in keys] for h in plain.history
    ]
    after, before = snapshot_parameters(measured.model), snapshot_parameters(plain.model)
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert not (plain.run_dir / CONFLICT_FILE).exists()
    assert plain.summary["gradient_conflict"] == {"every": 0}
    cost = measured.summary["gradient_conflict"]
    assert cost["every"] == 2 and cost["measurements"] == 2 and cost["time_s"] > 0
    assert cost["samples_per_task"] == {"understanding": K, "generation": K}
    assert cost["forward_backward_passes"] == 2 * cost["passes_per_measurement"] >= 8
    steps = [r["step"] for r in read_jsonl(measured.run_dir / CONFLICT_FILE)]
    assert sorted(set(steps)) == [2, 4]


def test_a_measurement_leaves_grads_and_rng_alone_and_is_not_step_time(tmp_path, monkeypatch):
    trainer = Trainer(_config(tmp_path, "run", conflict_every=1))
    try:
        probe = trainer.conflict
        measure = probe.measure

        def drawing(step):  # a policy drawing from the global RNG (e.g. with dropout)
            torch.rand(3)
            return measure(step)

        monkeypatch.setattr(probe, "measure", drawing)
        marker = torch.ones_like(probe.params[0])
        probe.params[0].grad = marker
        rng = torch.get_rng_state()
        trainer.measure_conflict(7)
        assert torch.equal(torch.get_rng_state(), rng)
        assert probe.params[0].grad is marker and all(p.grad is None for p in probe.params[1:])
        assert trainer.window._paused >= probe.seconds > 0
    finally:
        trainer.logger.close()
    assert {r["step"] for r in read_jsonl(trainer.setup.run_dir / CONFLICT_FILE)} == {7}


@pytest.mark.parametrize(
    "sections, image_sets",
    [
        ({}, set()),
        (
            {"reduction": HIMIX_HMGEN, "lora": {"enabled": True, "r": 2}},
            {"image_proj.understanding", "image_proj.generation"},
        ),
    ],
)
def test_groups_cover_every_trainable_parameter_once(tmp_path, sections, image_sets):
    result = train(tiny_run_config(tmp_path / "run", **sections), stop_after_step=0)
    groups = parameter_groups(result.built.base)
    trainable = [n for n, p in result.built.base.named_parameters() if p.requires_grad]
    assert list(groups) == trainable
    assert {id(p) for n, p in result.built.base.named_parameters() if n in groups} == {
        id(p) for p in result.model.parameters() if p.requires_grad
    }
    probe = ConflictProbe(
        TrainStep(result.built.base, result.data.loss_path),
        result.data,
        2,
        4,
        0,
        torch.device("cpu"),
    )
    rows = probe.measure(0)
    total = result.built.trainable_parameters
    assert sum(r["numel"] for r in rows if r["group"] != TOTAL) == total
    assert (
        sum(r["numel"] for r in rows if r["group"] == TOTAL and r["layer"] is not None)
        + sum(r["numel"] for r in rows if r["group"] != TOTAL and r["layer"] is None)
        == total
    )
    assert (rows[-1]["layer"], rows[-1]["group"], rows[-1]["numel"]) == (None, TOTAL, total)
    layer_groups = {g for layer, g in groups.values() if layer is not None}
    assert {g for g in layer_groups if g.startswith("image_proj.")} == image_sets
    if sections:  # LoRA: only adapters train, all in attention projections
        assert layer_groups == {"q_proj", "k_proj", "v_proj", "o_proj"} | {
            "image_proj.understanding",
            "image_proj.generation",
        }
    else:
        assert layer_groups == {"q_proj", "k_proj", "v_proj", "o_proj", "mlp", "norm"}
        outside = {g for layer, g in groups.values() if layer is None}
        assert outside == {"model.embed_tokens", "model.norm", "lm_head"}


def test_group_names():
    assert layer_group("self_attn.image_proj.generation.q_proj.lora_A.default.weight") == (
        "image_proj.generation"
    )
    assert layer_group("self_attn.k_proj.base_layer.weight") == "k_proj"
    assert layer_group("self_attn.q_norm.weight") == "norm"  # Chameleon's q/k norms
    assert layer_group("post_attention_layernorm.weight") == "norm"
    assert layer_group("mlp.down_proj.weight") == "mlp"
    assert layer_group("adapter.scale") == "adapter"
    assert outer_group("lm_head.modules_to_save.default.weight") == "lm_head"
    assert outer_group("model.vision_model.encoder.layers.3.mlp.fc1.weight") == (
        "model.vision_model.encoder.layers"
    )


def test_the_halves_are_fixed_and_split_the_pool():
    halves = probe_halves({"understanding": 5, "generation": 12}, 8, seed=3)
    assert halves == probe_halves({"understanding": 5, "generation": 12}, 8, seed=3)
    pooled = [(t, i) for h in halves for t in TASKS for i in h[t]]
    assert sorted(pooled) == sorted(
        [("understanding", i) for i in range(5)] + [("generation", i) for i in range(8)]
    )
    assert [sum(len(h[t]) for t in TASKS) for h in halves] == [6, 7]


def test_resume_rewrites_the_rows_past_its_checkpoint(tmp_path):
    whole = train(_config(tmp_path, "whole", conflict_every=1))
    cfg = _config(tmp_path, "crashed", conflict_every=1, ckpt_every=2)
    train(cfg, stop_after_step=3)  # measured steps 1-3, checkpoint at 2
    assert [r["step"] for r in read_jsonl(cfg.run.out_dir + "/" + CONFLICT_FILE)][-1] == 3
    resumed = train(_config(tmp_path, "crashed", conflict_every=1, ckpt_every=2, resume=True))
    assert resumed.start_step == 2
    assert read_jsonl(resumed.run_dir / CONFLICT_FILE) == read_jsonl(whole.run_dir / CONFLICT_FILE)


@pytest.mark.parametrize(
    "run, key",
    [
        ({"conflict_every": -1}, "run.conflict_every"),
        ({"conflict_samples": 0}, "run.conflict_samples"),
    ],
)
def test_bad_values_name_the_key(tmp_path, run, key):
    with pytest.raises(TokredError, match=key):
        tiny_run_config(tmp_path / "run", run=run)


def test_a_probe_needs_samples_of_both_tasks():
    class OneTask:
        def sizes(self):
            return {"understanding": 4, "generation": 0}

    with pytest.raises(TokredError, match="run.conflict_every.*generation"):
        ConflictProbe(None, OneTask(), 8, 4, 0, torch.device("cpu"))


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from tokred_train import train
    from tokred_train.run.distributed import dist_info, shutdown_distributed
    from tokred_train.testing import HIMIX_HMGEN, tiny_run_config

    out = sys.argv[1]
    for every in (0, 1):  # one launch, two runs: without and with measurements
        cfg = tiny_run_config(f"{out}/run-{every}", reduction=HIMIX_HMGEN, optim={"batch_size": 2},
                              run={"log_every": 1, "conflict_every": every}, eval={"at_end": False})
        result = train(cfg)
        torch.save({n: p.detach() for n, p in result.model.named_parameters()},
                   f"{out}/weights-{every}-{dist_info().rank}.pt")
    shutdown_distributed(dist_info())
    """
)


def test_under_ddp_the_main_process_measures_without_collectives(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = torchrun_env()
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = torch.load(tmp_path / "weights-0-0.pt")
    for rank in range(2):  # the ranks stay in sync, and measuring moved no weight
        weights = torch.load(tmp_path / f"weights-1-{rank}.pt")
        assert all(torch.equal(weights[n], plain[n]) for n in plain)
    rows = read_jsonl(tmp_path / "run-1" / CONFLICT_FILE)
    assert sorted({r["step"] for r in rows}) == [1, 2, 3]
    summary = json.loads((tmp_path / "run-1" / "summary.json").read_text())
    assert summary["gradient_conflict"]["measurements"] == 3

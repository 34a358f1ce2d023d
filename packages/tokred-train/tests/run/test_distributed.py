"""Two real processes under torchrun (gloo on the CPU) through the training loop.

Checks what data parallelism must guarantee: the ranks split one global batch (so the
logged step-1 loss and token count, all-reduced over ranks, equal a single process's
with the same global batch and the same initial weights), DistributedDataParallel keeps
the ranks' weights identical, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tokred_train.testing import torchrun_env

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch
    from tokred_train import load_config, train
    from tokred_train.run.distributed import dist_info, shutdown_distributed
    from tokred_train.testing import HIMIX_HMGEN

    out, batch_size = sys.argv[1], int(sys.argv[2])
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    cfg = load_config({
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 3},
        "data": {"num_train": 8, "num_val": 2, "image_size": 16, "patch_size": 4},
        "reduction": HIMIX_HMGEN,
        "optim": {"batch_size": batch_size, "max_steps": 3, "warmup_steps": 1, "lr": 3e-3},
        "run": {"out_dir": out + "/run", "progress": False, "tensorboard": False,
                "threads": 1, "log_every": 1, "ckpt_every": 3},
        "eval": {"max_samples": 2},
    }, extra)
    result = train(cfg)
    rank = dist_info().rank
    torch.save({n: p.detach() for n, p in result.model.named_parameters()},
               f"{out}/weights-{rank}.pt")
    shutdown_distributed(dist_info())
    """
)


def _launch(tmp_path, nproc: int, batch_size: int, overrides: list[str] | None = None) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = torchrun_env()
    cmd = [sys.executable, str(script), str(tmp_path), str(batch_size)]
    if overrides:
        cmd.append(json.dumps(overrides))
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *cmd[1:],
        ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _metrics(folder):
    return [
        json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()
    ]


def test_two_ranks_split_the_global_batch_and_stay_in_sync(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    _launch(single, 1, 4)
    _launch(ddp, 2, 2)  # 2 ranks x 2 samples: the same global batch of 4

    one, two = _metrics(single), _metrics(ddp)
    assert [r["step"] for r in two] == [1, 2, 3]
    assert two[0]["tokens"] == one[0]["tokens"] and two[0]["samples"] == one[0]["samples"] == 4
    for key in ("loss", "loss_understanding", "loss_generation"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-5), key

    w0 = torch.load(ddp / "weights-0.pt")
    w1 = torch.load(ddp / "weights-1.pt")
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert all(r["grad_norm"] > 0 for r in two) and two[-1]["loss"] != two[0]["loss"]

    summary = json.loads((ddp / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(list((ddp / "run" / "checkpoints").glob("step-*"))) == 1


def test_pcgrad_and_the_gate_under_two_ranks_match_one_process(tmp_path):
    """Gradient surgery averages each task's gradient across the ranks itself, and the
    gate the main process sets from its measurement reaches every rank."""
    strategy = [
        "strategy.surgery=pcgrad",
        "strategy.gate_threshold=1.0",
        "run.conflict_every=1",
        "run.conflict_samples=2",
    ]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    _launch(single, 1, 4, strategy)
    _launch(ddp, 2, 2, strategy)
    one, two = _metrics(single), _metrics(ddp)
    for mine, ref in zip(two, one, strict=True):  # step 2 follows step 1's surgery
        for key in ("loss", "loss_understanding", "loss_generation", "grad_norm"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-4), (mine["step"], key)
    w0, w1 = torch.load(ddp / "weights-0.pt"), torch.load(ddp / "weights-1.pt")
    assert all(torch.equal(w0[name], w1[name]) for name in w0)
    gates = (ddp / "run" / "gate.jsonl").read_text().splitlines()
    assert [json.loads(g)["full_layers"] for g in gates] == [[], [0, 1, 2]]


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from tokred_core import RunInterrupted
    from tokred_train import load_config, train
    from tokred_train.run.distributed import dist_info, shutdown_distributed

    out = sys.argv[1]
    rank = dist_info().rank

    def evaluator(model, data, step):  # SIGTERM reaches rank 1 only, at step 2
        if step == 2 and rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}

    cfg = load_config({
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2},
        "data": {"num_train": 8, "num_val": 2, "image_size": 16, "patch_size": 4},
        "optim": {"batch_size": 2, "max_steps": 6, "warmup_steps": 1},
        "run": {"out_dir": out + "/run", "progress": False, "tensorboard": False,
                "threads": 1, "log_every": 1},
        "eval": {"every": 2, "max_samples": 2},
    })
    try:
        train(cfg, evaluator=evaluator)
    except RunInterrupted as exc:
        with open(f"{out}/stopped-{rank}", "w") as f:
            f.write(f"{exc.exit_code} {exc.message}")
    shutdown_distributed(dist_info())
    """
)


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(INTERRUPT_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    env = torchrun_env()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        code, message = (tmp_path / f"stopped-{rank}").read_text().split(" ", 1)
        assert code == "143" and "after step 2 of 6" in message, (rank, message)
        assert "resume from " in message and "step-000002" in message, (rank, message)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")] == ["step-000002"]
    assert [r["step"] for r in _metrics(tmp_path)] == [1, 2]

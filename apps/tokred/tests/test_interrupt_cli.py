"""SIGTERM to a `tokred train` process: it saves after its step, says in its last stderr
line where and how to resume, and exits 143 without a traceback (the loop's side of
interrupts is tested in tokred-train's run/test_interrupt.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tokred_train.run.checkpoint import find_latest_checkpoint


def test_sigterm_to_tokred_train_saves_says_how_to_resume_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tokred.cli",
        "train",
        "tiny-shapes",
        f"run.out_dir={run_dir}",
        "optim.max_steps=100000",
        "data.num_train=50",
        "run.progress=false",
        "run.tensorboard=false",
        "run.log_every=1",
        "run.threads=1",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no training step within 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tokred: interrupted by SIGTERM after step "), last
    assert "Traceback" not in stderr
    ckpt = find_latest_checkpoint(run_dir)
    assert ckpt is not None and f"{ckpt.path}" in last
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")]

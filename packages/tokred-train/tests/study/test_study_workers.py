"""A study's worker processes stop with it: killed with SIGKILL (no handler runs), the
study leaves workers that notice within a second, checkpoint their runs and exit, rather
than training on, orphaned, into the folder a rerun would train into too. Stopped with
Ctrl-C (SIGINT to the whole process group), the running runs checkpoint and stop, and the
queued ones never start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import sys
    from tokred_train.study.driver import run_study
    from tokred_train.testing import tiny_run_config

    if __name__ == "__main__":  # spawned workers import this file too
        out = sys.argv[1]
        config = tiny_run_config(out + "/unused", optim={"max_steps": 100000},
                                 run={"ckpt_every": 1000, "log_every": 1})
        run_study(config, ["baseline"], seeds=1, out_dir=out + "/study", jobs=2,
                  num_understanding=2, num_generation=2, probe_samples=2)
    """
)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return not state.stdout.strip().startswith("Z")


def _start_training(tmp_path, **popen) -> subprocess.Popen:
    """The study script, returned once both workers' runs are training (3 runs queued)."""
    script = tmp_path / "study.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    study = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, **popen)
    runs = tmp_path / "study" / "runs"
    deadline = time.monotonic() + 300
    while len(list(runs.glob("*/*/*.partial/metrics.jsonl"))) < 2:
        assert study.poll() is None, "the study ended before its runs trained"
        assert time.monotonic() < deadline, "no run trained within 300 s"
        time.sleep(0.5)
    return study


def test_ctrl_c_stops_the_running_runs_with_a_checkpoint_and_starts_no_queued_one(tmp_path):
    study = _start_training(tmp_path, start_new_session=True)
    os.killpg(study.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    try:
        study.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(study.pid, signal.SIGKILL)
        raise AssertionError("the study still trains 120 s after Ctrl-C") from None
    assert study.returncode != 0
    runs = sorted((tmp_path / "study" / "runs").glob("*/*/*"))
    assert [r.suffix for r in runs] == [".partial", ".partial"]  # the third never started
    for run in runs:
        assert list((run / "checkpoints").glob("step-*/COMPLETE")), run


def test_killing_the_study_stops_its_workers_with_a_checkpoint(tmp_path):
    study = _start_training(tmp_path)
    runs = tmp_path / "study" / "runs"
    workers = [pid for pid in _children(study.pid) if _alive(pid)]
    study.send_signal(signal.SIGKILL)
    study.wait(timeout=30)
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "orphaned workers still training after 120 s"
        time.sleep(0.5)
    partial = sorted(runs.glob("*/*/*.partial"))
    assert len(partial) == 2
    for run in partial:  # each stopped on the SIGTERM it sent itself, after saving
        assert list((run / "checkpoints").glob("step-*/COMPLETE")), run

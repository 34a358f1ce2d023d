"""SIGINT and SIGTERM stop a run after its step with a checkpoint, and a resume from it is
the uninterrupted run; a second signal stops at once without a half-written checkpoint.
Real signals throughout, sent to this process from inside the run (the evaluator runs at
validation, between steps); the app's tests send one to a `tokred train` process."""

from __future__ import annotations

import os
import pickle
import signal

import pytest
import torch
from tokred_core import RunInterrupted
from tokred_train import train
from tokred_train.run import checkpoint as checkpoint_module
from tokred_train.run.checkpoint import find_latest_checkpoint, list_checkpoints
from tokred_train.testing import tiny_run_config


def _config(run_dir, **run):
    return tiny_run_config(
        run_dir,
        optim={"max_steps": 6},
        run={"log_every": 1, "ckpt_every": 3, **run},
        eval={"every": 2, "max_samples": 2},
    )


def _signal_at(step_wanted: int, *signums: int):
    """An evaluator that sends `signums` to this process at validation of `step_wanted`."""

    def evaluator(model, data, step):
        if step == step_wanted:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return {}

    return evaluator


def _losses(history):
    return [(h["step"], h["loss"]) for h in history]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_after_the_step_and_the_resume_is_the_uninterrupted_run(tmp_path, signum):
    whole = train(_config(tmp_path / "whole"))
    handler = signal.getsignal(signum)
    with pytest.raises(RunInterrupted) as stop:
        train(_config(tmp_path / "cut"), evaluator=_signal_at(4, signum))
    assert stop.value.exit_code == 128 + signum
    name = signal.Signals(signum).name
    assert f"interrupted by {name} after step 4 of 6" in stop.value.message
    assert "step-000004" in stop.value.message and "run.resume=true" in stop.value.message
    assert find_latest_checkpoint(tmp_path / "cut").step == 4
    assert signal.getsignal(signum) == handler  # the earlier handler is back

    resumed = train(_config(tmp_path / "cut", resume=True))
    assert resumed.start_step == 4
    assert _losses(resumed.history) == _losses(whole.history)[4:]
    for name_, p in whole.model.named_parameters():
        assert torch.equal(p, dict(resumed.model.named_parameters())[name_]), name_


def test_a_signal_on_a_checkpoint_step_does_not_write_it_twice(tmp_path):
    cfg = _config(tmp_path / "run")
    with pytest.raises(RunInterrupted, match="after step 3 of 6"):
        train(cfg, overrides=["eval.every=3"], evaluator=_signal_at(3, signal.SIGTERM))
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [3]


def test_without_checkpoint_on_interrupt_nothing_new_is_written(tmp_path):
    with pytest.raises(RunInterrupted, match=r"checkpoint_on_interrupt=false.*step-000003"):
        train(
            _config(tmp_path / "run", checkpoint_on_interrupt=False),
            evaluator=_signal_at(4, signal.SIGTERM),
        )
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [3]


def test_a_second_signal_during_the_save_stops_at_once_and_leaves_no_partial_folder(
    tmp_path, monkeypatch
):
    real_save = torch.save

    def save_then_signal(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if "step-000004" in str(f):  # mid-write of the interrupt's checkpoint
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_signal)
    with pytest.raises(RunInterrupted, match="second SIGINT.*resume from .*step-000003"):
        train(_config(tmp_path / "run"), evaluator=_signal_at(4, signal.SIGINT))
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000003"]
    assert find_latest_checkpoint(tmp_path / "run").step == 3


def test_run_interrupted_survives_pickling_for_study_workers():
    again = pickle.loads(pickle.dumps(RunInterrupted("stopped", signal.SIGTERM)))
    assert (again.message, again.exit_code) == ("stopped", 143)

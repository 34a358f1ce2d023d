"""Checkpoint writes cut short at every phase, and writes the OS refuses.

A kill is simulated by raising, from inside the writer, an exception that nothing in
tokred catches (a BaseException, as SIGKILL would leave no handler run either; a
checkpoint must not rely on cleanup for correctness). After it, a resume reads the newest
complete checkpoint and ends bit-identical to the uninterrupted run. A full disk is a
writer raising ENOSPC: one line naming the file, saying the newest checkpoint is safe.
"""

from __future__ import annotations

import errno
import io
import os
import stat

import pytest
import torch
from safetensors.torch import save_file
from tokred_core import TokredError
from tokred_train import train
from tokred_train.run import checkpoint as ckpt_module
from tokred_train.run.checkpoint import find_latest_checkpoint, list_checkpoints
from tokred_train.testing import tiny_run_config


class Killed(BaseException):
    """Stands for the process dying mid-write."""


def _config(run_dir, **run):
    return tiny_run_config(
        run_dir, optim={"max_steps": 4}, run={"ckpt_every": 2, "keep_checkpoints": 0, **run}
    )


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    result = train(_config(tmp_path_factory.mktemp("whole") / "run"))
    return [(h["step"], h["loss"]) for h in result.history], _weights(result.model)


def _fail_when(monkeypatch, target, name, hit, error):
    """Make `target.name(...)` raise `error` when `hit(args)` holds, where args are the
    call's arguments as strings (a file object as its name)."""
    real = getattr(target, name)

    def writer(*args, **kwargs):
        if hit([str(a.name) if isinstance(a, io.IOBase) else str(a) for a in args]):
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, writer)


def _in_step_4(file_name):
    """Writing `file_name` into step 4's temporary folder."""
    return lambda args: any(".tmp-step-000004-" in a and a.endswith(file_name) for a in args)


def _step_4_renamed(args):
    return len(args) == 2 and ".tmp-step-000004-" in args[0] and args[1].endswith("step-000004")


def _latest_to_step_4(args):
    return args[0].endswith("latest") and "step-000004" in args[1]


# (what is patched, its attribute, which of its calls is the phase)
PHASES = {
    "weights": (ckpt_module, "save_file", _in_step_4("model.safetensors")),
    "optimizer": (ckpt_module.torch, "save", _in_step_4("optimizer.pt")),
    "trainer state": (ckpt_module.torch, "save", _in_step_4("trainer_state.pt")),
    "run.json": (ckpt_module, "atomic_write_text", _in_step_4("run.json")),
    "marker": (ckpt_module, "atomic_write_text", _in_step_4("COMPLETE")),
    "rename into place": (ckpt_module.os, "replace", _step_4_renamed),
    "latest pointer": (ckpt_module, "atomic_write_text", _latest_to_step_4),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_kill_in_any_phase_of_a_write_then_resume_is_the_uninterrupted_run(
    tmp_path, monkeypatch, uninterrupted, phase
):
    losses, weights = uninterrupted
    target, name, hit = PHASES[phase]
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fail_when(patch, target, name, hit, Killed())
        with pytest.raises(Killed):
            train(_config(run_dir))
    newest = find_latest_checkpoint(run_dir)
    # Only the latest pointer comes after the rename: then step 4 is whole already.
    assert newest.step == (4 if phase == "latest pointer" else 2)
    resumed = train(_config(run_dir, resume=True))
    assert [(h["step"], h["loss"]) for h in resumed.history] == losses[newest.step :]
    for n, w in weights.items():
        assert torch.equal(w, dict(resumed.model.named_parameters())[n]), n
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("phase", ["weights", "optimizer", "marker", "latest pointer"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_safe_checkpoint(
    tmp_path, monkeypatch, phase
):
    target, name, hit = PHASES[phase]
    run_dir = tmp_path / "run"
    _fail_when(monkeypatch, target, name, hit, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(TokredError) as failure:
        train(_config(run_dir))
    message = str(failure.value)
    assert "\n" not in message and "No space left on device" in message
    assert message.startswith("cannot write checkpoint file ")
    safe = "step-000004" if phase == "latest pointer" else "step-000002"
    assert f"the newest complete checkpoint, {run_dir / 'checkpoints' / safe}, is safe" in message
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_a_safetensors_os_error_is_read_as_the_os_reason(tmp_path):
    missing = tmp_path / "no-such-folder" / "model.safetensors"
    with pytest.raises(Exception) as raised:
        save_file({"w": torch.zeros(2)}, str(missing))
    failure = ckpt_module._write_failure(raised.value, missing, tmp_path / "checkpoints")
    assert failure is not None and os.strerror(errno.ENOENT) in str(failure)
    assert "no complete checkpoint was written before" in str(failure)


def test_a_bug_in_a_writer_keeps_its_traceback(tmp_path, monkeypatch):
    bug = ZeroDivisionError("bug")
    _fail_when(monkeypatch, ckpt_module, "save_file", lambda args: True, bug)
    with pytest.raises(ZeroDivisionError):
        train(_config(tmp_path / "run"))


def test_every_file_of_a_checkpoint_has_the_same_mode(tmp_path):
    train(_config(tmp_path / "run", keep_checkpoints=1))
    (newest,) = list_checkpoints(tmp_path / "run")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in newest.path.iterdir()}
    assert len(set(modes.values())) == 1, modes
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}

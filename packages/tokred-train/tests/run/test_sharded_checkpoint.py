"""Sharded checkpoints in one process (DCP needs no process group): a round trip of
weights and optimizer state, a checkpoint that does not fit, and writes cut short or
refused by the OS, which leave nothing a resume would read. The multi-process cases
(2 FSDP ranks -> 1 process and back) are in test_sharded_training.py."""

from __future__ import annotations

import errno
import json
import os
from traceback import StackSummary

import pytest
import torch
import torch.distributed.checkpoint as dcp
from tokred_core import TokredError
from tokred_train import train
from tokred_train.run import sharded_checkpoint as sharded
from tokred_train.run.checkpoint import (
    CHECKPOINT_DIR,
    MARKER,
    find_latest_checkpoint,
    remove_partial_checkpoints,
)
from tokred_train.run.distributed import DistInfo
from tokred_train.run.step import TrainStep, batch_targets
from tokred_train.testing import tiny_run_config
from torch.distributed.checkpoint.api import CheckpointException

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class Killed(BaseException):
    """Stands for the process dying mid-write."""


def _trained(tmp_path, name, seed=0, **model):
    cfg = tiny_run_config(tmp_path / name, run={"seed": seed}, model=model)
    result = train(cfg, stop_after_step=0)
    step = TrainStep(result.built.base, result.data.loss_path)
    optimizer = torch.optim.AdamW([p for p in result.model.parameters() if p.requires_grad])
    batch = result.data.collate({"understanding": [0, 1], "generation": [0]})
    step(batch, batch_targets(batch, result.data.loss_path)).sum().backward()
    optimizer.step()
    return result, step, optimizer


def _save(run_dir, step, optimizer, **kw):
    return sharded.save_sharded_checkpoint(run_dir, 1, step, optimizer, None, DistInfo(), **kw)


def test_weights_and_optimizer_state_round_trip(tmp_path):
    result, step, optimizer = _trained(tmp_path, "a")
    path = _save(tmp_path / "a", step, optimizer, export=True)
    marker = json.loads((path / MARKER).read_text())
    assert (
        any(n.startswith("shards/") for n in marker["files"])
        and "model.safetensors" in marker["files"]
    )
    assert find_latest_checkpoint(tmp_path / "a").path == path

    other, step2, optimizer2 = _trained(tmp_path, "b", seed=1)
    sharded.load_sharded_state(path, step2, optimizer2)
    for (name, p), q in zip(step.named_parameters(), step2.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)
    for p, q in zip(
        optimizer.param_groups[0]["params"], optimizer2.param_groups[0]["params"], strict=True
    ):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                optimizer2.state[q][key], optimizer.state[p][key], rtol=0, atol=0
            )


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
    _, step, optimizer = _trained(tmp_path, "a")
    path = _save(tmp_path / "a", step, optimizer)
    _, wider, wider_optimizer = _trained(tmp_path, "b", hidden_size=48)
    with pytest.raises(TokredError, match="does not fit this model") as err:
        sharded.load_sharded_state(path, wider, wider_optimizer)
    assert "\n" not in str(err.value)


# A full disk reaches the caller as an OSError, or (measured on a 5 MB tmpfs) wrapped by
# DCP with torch's archive writer's "unexpected pos".
CUT_SHORT = RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 704 vs 598")


@pytest.mark.parametrize(
    "error, expected",
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
        (CheckpointException("save", {0: (CUT_SHORT, StackSummary())}), "a full disk or quota"),
    ],
)
def test_a_full_disk_while_sharding_is_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, error, expected
):
    _, step, optimizer = _trained(tmp_path, "a")

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(dcp, "save", full)
    with pytest.raises(TokredError, match=expected) as err:
        _save(tmp_path / "a", step, optimizer)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "a" / CHECKPOINT_DIR).iterdir()) == []


def test_a_kill_after_the_shards_leaves_no_checkpoint_a_resume_reads(tmp_path, monkeypatch):
    _, step, optimizer = _trained(tmp_path, "a")

    def killed(obj, path):
        raise Killed

    monkeypatch.setattr(sharded, "_torch_save", killed)  # the trainer state, after the shards
    with pytest.raises(Killed):
        _save(tmp_path / "a", step, optimizer)
    assert find_latest_checkpoint(tmp_path / "a") is None
    remove_partial_checkpoints(tmp_path / "a")
    assert list((tmp_path / "a" / CHECKPOINT_DIR).iterdir()) == []

"""A run folder is never silently overwritten or misread: an earlier run's metrics without
a checkpoint are refused (unless run.overwrite), a `latest` pointer to outside the run is
ignored, and resuming at or past max_steps says so."""

from __future__ import annotations

import logging

import pytest
from tokred_core import TokredError
from tokred_train import train
from tokred_train.run.checkpoint import find_latest_checkpoint
from tokred_train.testing import tiny_run_config


def test_an_earlier_runs_metrics_are_not_overwritten_without_overwrite(tmp_path):
    run = tmp_path / "run"
    train(tiny_run_config(run, optim={"max_steps": 1}, run={"save_final": False}))
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(TokredError, match=r"run.out_dir=.*metrics.jsonl.*run.overwrite=true"):
        train(tiny_run_config(run, optim={"max_steps": 2}, run={"save_final": False}))
    assert (run / "metrics.jsonl").read_text() == before
    train(tiny_run_config(run, optim={"max_steps": 2}, run={"overwrite": True}))
    assert (run / "metrics.jsonl").read_text() != before


def test_a_latest_pointer_outside_the_run_is_ignored(tmp_path, caplog):
    run = tmp_path / "run"
    train(
        tiny_run_config(run, optim={"max_steps": 2}, run={"ckpt_every": 1, "keep_checkpoints": 0})
    )
    newest = find_latest_checkpoint(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "checkpoints" / "latest").write_text("../../elsewhere\n")
    with caplog.at_level(logging.WARNING, logger="tokred_train.run.checkpoint"):
        found = find_latest_checkpoint(run)
    assert found is not None and found.path == newest.path
    assert any("not a checkpoint of this run" in r.getMessage() for r in caplog.records)


def test_resuming_at_max_steps_warns_that_nothing_is_left(tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny_run_config(run, optim={"max_steps": 3}))
    with caplog.at_level(logging.WARNING, logger="tokred_train.run.setup"):
        train(tiny_run_config(run, optim={"max_steps": 2}, run={"resume": True}))
    assert any("nothing is left to train" in r.getMessage() for r in caplog.records)

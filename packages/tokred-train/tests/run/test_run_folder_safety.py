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


def test_an_out_dir_that_cannot_hold_a_run_fails_before_building(tmp_path, monkeypatch):
    import tokred_train.run.setup as setup

    def never(*args, **kwargs):
        raise AssertionError("built data or model for an unusable out_dir")

    monkeypatch.setattr(setup, "build_run", never)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    with pytest.raises(TokredError, match=r"run.out_dir='.*file' is a file, not a folder"):
        train(tiny_run_config(a_file))
    with pytest.raises(TokredError, match=r"run.out_dir='.*file/run': cannot create it"):
        train(tiny_run_config(a_file / "run"))
    assert a_file.read_text() == "not a folder"

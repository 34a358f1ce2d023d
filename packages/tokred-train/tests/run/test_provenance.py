"""Every checkpoint holds the run's config and versions (run.json, checksummed), so a
resume without config.yaml still refuses a changed model or plan in one line."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from tokred_core import TokredError
from tokred_train import train
from tokred_train.config import config_to_dict
from tokred_train.run.checkpoint import MARKER, find_latest_checkpoint
from tokred_train.run.provenance import RUN_FILE, read_provenance
from tokred_train.testing import tiny_run_config


def _one_checkpoint(tmp_path):
    cfg = tiny_run_config(tmp_path / "run", optim={"max_steps": 2}, run={"ckpt_every": 1})
    train(cfg, stop_after_step=1)
    return cfg, find_latest_checkpoint(tmp_path / "run")


def test_a_checkpoint_records_its_config_and_versions_under_its_checksum(tmp_path):
    cfg, ckpt = _one_checkpoint(tmp_path)
    recorded = read_provenance(ckpt.path)
    assert recorded["config"] == json.loads(json.dumps(config_to_dict(cfg)))
    assert recorded["versions"]["torch"] and recorded["versions"]["tokred-train"]
    marker = json.loads((ckpt.path / MARKER).read_text())
    assert RUN_FILE in marker["files"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.num_layers=2", "model.num_layers"),
        ("reduction.understanding=himix", "reduction.understanding.policy"),
        ("data.understanding_ratio=0.25", "data.understanding_ratio"),
    ],
)
def test_a_resume_without_config_yaml_still_refuses_another_run(tmp_path, override, key):
    cfg, ckpt = _one_checkpoint(tmp_path)
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(TokredError, match=rf"^{key}=.* differs from the run's .*{RUN_FILE}"):
        train(cfg, overrides=["run.resume=true", override])
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before writing anything
    assert find_latest_checkpoint(tmp_path / "run").path == ckpt.path


def test_the_checkpoint_outranks_an_edited_config_yaml(tmp_path):
    cfg, _ = _one_checkpoint(tmp_path)
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text(saved.read_text().replace("num_layers: 3", "num_layers: 4"))
    # config.yaml now agrees with the override, the checkpoint does not.
    with pytest.raises(TokredError, match="model.num_layers=4 differs"):
        train(cfg, overrides=["run.resume=true", "model.num_layers=4"])


def test_a_resume_across_package_versions_warns(tmp_path, caplog):
    cfg, ckpt = _one_checkpoint(tmp_path)
    path = ckpt.path / RUN_FILE
    recorded = json.loads(path.read_text())
    recorded["versions"]["torch"] = "0.0.1"
    path.write_text(json.dumps(recorded))
    # Rewrite the marker's record of run.json so that the checkpoint stays whole.
    from tokred_train.run.integrity import describe_files

    marker = json.loads((ckpt.path / MARKER).read_text())
    marker["files"].update(describe_files(ckpt.path, [RUN_FILE]))
    (ckpt.path / MARKER).write_text(json.dumps(marker))
    with caplog.at_level(logging.WARNING, logger="tokred_train.run.setup"):
        result = train(cfg, overrides=["run.resume=true"])
    assert result.start_step == 1
    assert any("torch 0.0.1 ->" in r.getMessage() for r in caplog.records)


def test_eval_without_config_yaml_rebuilds_the_model_from_the_checkpoint(tmp_path, caplog):
    from tokred_train.eval.run import load_run

    run_dir = tmp_path / "run"
    result = train(tiny_run_config(run_dir, optim={"max_steps": 1}, eval={"at_end": False}))
    (run_dir / "config.yaml").unlink()
    with caplog.at_level(logging.WARNING, logger="tokred_train.eval.run"):
        loaded = load_run(run_dir)
    assert any("using the config its checkpoint recorded" in r.getMessage() for r in caplog.records)
    assert config_to_dict(loaded.config)["model"] == config_to_dict(result.config)["model"]
    for name, p in result.model.named_parameters():
        assert torch.equal(p, dict(loaded.model.named_parameters())[name]), name
    assert not (run_dir / "config.yaml").exists()  # evaluation never writes the run folder

"""The non-finite guard: inf and NaN refused in the config, a run that diverges stops in one
line naming the step and the last good checkpoint (or skips the step), metrics.jsonl keeps
"not finite" apart from "no sample", and eval warns on NaN weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from tokred_core import TokredError
from tokred_train import train
from tokred_train.config import load_config
from tokred_train.eval.run import load_run
from tokred_train.run.checkpoint import save_checkpoint
from tokred_train.run.log import MetricsLogger
from tokred_train.testing import tiny_run_config


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=inf",
        "optim.lr=nan",
        "optim.clip_norm=nan",
        "optim.weight_decay=-inf",
        "optim.eps=nan",
    ],
)
def test_non_finite_numbers_are_refused_by_key(override):
    key, value = override.split("=")
    with pytest.raises(TokredError, match=rf"^{key}: '{value}' is not a finite number"):
        load_config(None, [override])


def test_a_yaml_inf_is_refused_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: .inf\n")
    with pytest.raises(TokredError, match="optim.lr: inf is not a finite number"):
        load_config(path)


def _diverging(tmp_path, **run):
    # lr 1e12: the first update blows the weights up, the next gradient is not finite.
    return tiny_run_config(
        tmp_path / "run",
        optim={"lr": 1e12, "max_steps": 4, "clip_norm": 0.0, "warmup_steps": 0},
        run={"ckpt_every": 1, "log_every": 1, **run},
    )


def test_a_diverging_run_stops_in_one_line_naming_the_step_and_last_checkpoint(tmp_path):
    with pytest.raises(TokredError) as caught:
        train(_diverging(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "(not finite)" in message
    step = int(message.split()[1].rstrip(":"))
    assert step >= 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == list(range(1, step))  # the good steps, logged
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert ckpts and ckpts[-1].name in message  # the last good checkpoint, named
    for path in ckpts:  # nothing not finite was ever written
        weights = load_file(str(path / "model.safetensors"))
        assert all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_skip_step_drops_the_updates_and_counts_them(tmp_path):
    result = train(_diverging(tmp_path, on_nonfinite="skip_step"))
    skipped = result.summary["nonfinite_steps_skipped"]
    assert 1 <= skipped <= 3
    assert all(bool(torch.isfinite(p).all()) for p in result.built.model.parameters())
    with pytest.raises(TokredError, match="run.on_nonfinite: 'ignore'"):
        load_config(None, ["run.on_nonfinite=ignore"])


def test_metrics_keep_not_finite_apart_from_no_sample(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False, progress=False, total_steps=1)
    logger.log_steps(
        [
            {
                "step": 1,
                "loss": float("nan"),
                "loss_understanding": None,
                "loss_generation": float("inf"),
            }
        ]
    )
    logger.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["loss"] == "nan" and row["loss_understanding"] is None
    assert row["loss_generation"] == "inf"


def test_eval_warns_on_a_checkpoint_with_nan_weights(tmp_path, caplog):
    # A checkpoint saved with NaN weights (e.g. written before the guard existed): whole by
    # its checksums, meaningless by its values.
    result = train(tiny_run_config(tmp_path / "run", optim={"max_steps": 1}))
    model = result.built.model
    name, param = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.fill_(float("nan"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    save_checkpoint(tmp_path / "run", 2, model, optimizer, None)
    with caplog.at_level(logging.WARNING, logger="tokred_train.eval.run"):
        load_run(tmp_path / "run")
    assert any("NaN or inf" in r.getMessage() and name in r.getMessage() for r in caplog.records)

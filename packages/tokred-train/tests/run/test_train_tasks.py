"""data.train_tasks: an isolated run trains on exactly the samples of its task that the
unified run sees, in the same order, over the same optimizer steps."""

from __future__ import annotations

import pytest
from tokred_core import TokredError
from tokred_train import load_config, train
from tokred_train.run.log import SAMPLES_FILE, read_jsonl
from tokred_train.testing import tiny_run_config


def _run(tmp_path, name, tasks, **optim):
    cfg = tiny_run_config(
        tmp_path / name,
        data={"train_tasks": tasks},
        run={"log_samples": True, "log_every": 1},
        optim={"max_steps": 4, "grad_accum": 2, **optim},
        eval={"at_end": False},
    )
    result = train(cfg)
    return result, read_jsonl(tmp_path / name / SAMPLES_FILE)


def test_isolated_runs_see_the_unified_runs_samples_of_their_task(tmp_path):
    unified, both = _run(tmp_path, "unified", ["understanding", "generation"])
    assert {len(r["understanding"]) for r in both} == {2}  # ratio 0.5 of batches of 4
    for task in ("understanding", "generation"):
        isolated, rows = _run(tmp_path, task, [task])
        assert [(r["step"], r["micro"]) for r in rows] == [(r["step"], r["micro"]) for r in both]
        assert [r[task] for r in rows] == [r[task] for r in both]
        assert all(set(r) == {"step", "micro", task} for r in rows)
        assert [h["step"] for h in isolated.history] == [h["step"] for h in unified.history]
        other = "generation" if task == "understanding" else "understanding"
        assert all(h[f"loss_{other}"] is None for h in isolated.history)
        assert all(h[f"loss_{task}"] is not None for h in isolated.history)


def test_a_step_without_samples_of_the_trained_task_still_steps(tmp_path):
    # Batches of 2 at ratio 0.25: one understanding sample every other micro-batch.
    cfg = tiny_run_config(
        tmp_path / "sparse",
        data={"train_tasks": ["understanding"], "understanding_ratio": 0.25},
        run={"log_samples": True, "log_every": 1},
        optim={"max_steps": 4, "batch_size": 2},
        eval={"at_end": False},
    )
    result = train(cfg)
    rows = read_jsonl(tmp_path / "sparse" / SAMPLES_FILE)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [len(r.get("understanding", [])) for r in rows] == [0, 1, 0, 1]
    assert result.last_step == 4
    assert [h["samples"] for h in result.history] == [0, 1, 0, 1]
    assert [h["loss_understanding"] is None for h in result.history] == [True, False, True, False]


@pytest.mark.parametrize(
    "tasks, ratio, message",
    [
        (["vision"], 0.5, "vision"),
        ([], 0.5, r"\[\]"),
        (["generation", "generation"], 0.5, "each once"),
        (["understanding"], 0.0, "get no samples"),
        (["generation"], 1.0, "get no samples"),
    ],
)
def test_bad_train_tasks_are_named(tasks, ratio, message):
    with pytest.raises(TokredError, match=rf"data\.train_tasks: .*{message}"):
        load_config({"data": {"train_tasks": tasks, "understanding_ratio": ratio}})


def test_train_tasks_take_the_command_line_form():
    cfg = load_config({}, ["data.train_tasks=understanding"])
    assert cfg.data.train_tasks == ["understanding"]

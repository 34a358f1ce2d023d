"""`run_study` end to end on a tiny config: every run of every arm at every seed, study.json
and report.md, a resumed study that retrains nothing finished, and clear errors."""

from __future__ import annotations

import json

import pytest
from tokred_core import TokredError
from tokred_train.study.driver import REPORT_FILE, STUDY_FILE, run_study
from tokred_train.study.runner import RESULT_FILE
from tokred_train.testing import tiny_run_config


def _config(tmp_path):
    return tiny_run_config(tmp_path / "unused", optim={"max_steps": 2})


ARMS = ["baseline", "himix+hmgen:num_shallow=1@task"]


def _study(tmp_path, events, arms=ARMS, seeds=2, **kwargs):
    kwargs.setdefault("on_event", events.append)
    return run_study(
        _config(tmp_path),
        arms,
        seeds=seeds,
        out_dir=tmp_path / "study",
        num_understanding=4,
        num_generation=2,
        probe_samples=2,
        **kwargs,
    )


class Interrupt(Exception):
    pass


def test_a_study_runs_every_arm_at_every_seed_and_resumes(tmp_path):
    events: list[str] = []

    def stop_after_four(message):
        events.append(message)
        if sum("training" in e for e in events) == 4:
            raise Interrupt  # the fourth run stops before it trains

    with pytest.raises(Interrupt):
        _study(tmp_path, events, on_event=stop_after_four)
    runs = tmp_path / "study" / "runs"
    complete = sorted(p.parent.name + "/" + p.name for p in runs.glob("*/*/seed-*") if p.is_dir())
    assert len([c for c in complete if not c.endswith(".partial")]) == 3  # three finished
    assert not list(runs.glob("*/*/*.partial"))  # the fourth had not started training

    events2: list[str] = []
    study = _study(tmp_path, events2)
    assert sum("reused" in e for e in events2) == 3
    assert sum("training" in e for e in events2) == 12 - 3
    assert (tmp_path / "study" / STUDY_FILE).is_file()
    assert (tmp_path / "study" / REPORT_FILE).read_text().startswith("# Synergy study")
    saved = json.loads((tmp_path / "study" / STUDY_FILE).read_text())
    assert list(saved["arms"]) == ARMS and saved["seeds"] == [0, 1]
    assert len(saved["records"]) == 12
    for arm in saved["arms"]:
        runs_of = saved["arms"][arm]["runs"]
        assert set(runs_of) == {"unified", "isolated-understanding", "isolated-generation"}
        assert set(runs_of["unified"]) == {"understanding", "generation"}
        assert set(runs_of["isolated-understanding"]) == {"understanding"}
        assert runs_of["unified"]["understanding"]["estimate"]["n"] == 2
        assert set(saved["arms"][arm]["synergy"]) == {"understanding", "generation"}
    accelerated = saved["arms"][ARMS[1]]
    assert set(accelerated["synergy_kept"]) == {"understanding", "generation"}
    flops = accelerated["cost"]["unified"]["flops_ratio"]["mean"]
    assert 0 < flops < 1  # HiMix + HMGen price below the baseline on the same batches
    assert saved["arms"]["baseline"]["cost"]["unified"]["flops_ratio"]["mean"] == 1
    assert saved["findings"]["a_asymmetry"]["layers"] == 3
    assert study["records"] == saved["records"]

    events3: list[str] = []
    _study(tmp_path, events3)  # everything complete: nothing trains again
    assert sum("training" in e for e in events3) == 0


def test_runs_that_train_the_same_are_trained_once(tmp_path):
    events: list[str] = []
    arms = ["baseline", "himix+hmgen:num_shallow=1@modality", "himix+hmgen:num_shallow=1@task"]
    study = _study(tmp_path, events, arms=arms, seeds=1)
    assert sum("training" in e for e in events) == 9 - 2  # task's isolated runs: modality's
    shared = [r for r in study["records"] if r["reused_from"]]
    assert {(r["arm"], r["kind"], r["reused_from"]) for r in shared} == {
        (arms[2], kind, arms[1]) for kind in ("isolated-understanding", "isolated-generation")
    }
    assert not (tmp_path / "study" / "runs" / arms[2] / "isolated-understanding").exists()
    saved = json.loads((tmp_path / "study" / STUDY_FILE).read_text())
    runs_of = saved["arms"][arms[2]]["runs"]
    assert runs_of["isolated-understanding"]["understanding"]["estimate"]["n"] == 1


def test_a_run_interrupted_mid_training_resumes_from_its_partial_folder(tmp_path):
    cfg = tiny_run_config(tmp_path / "unused", optim={"max_steps": 4}, run={"ckpt_every": 2})
    from tokred_train.study.arms import parse_arm
    from tokred_train.study.runner import StudyRunner

    runner = StudyRunner(cfg, tmp_path / "s", num_understanding=2, num_generation=2)
    arm = parse_arm("baseline")
    spec = arm.runs()[1]
    partial = runner.run_dir(spec, 0).with_name("seed-0.partial")
    from tokred_train import train

    train(runner.run_config(arm, spec, 0, partial), stop_after_step=3)  # a crash at step 3
    assert (partial / "checkpoints").is_dir() and not (partial / RESULT_FILE).exists()
    record = runner.run(arm, spec, 0)
    assert record.steps == 4
    assert (runner.run_dir(spec, 0) / RESULT_FILE).is_file() and not partial.exists()
    rows = [json.loads(line) for line in (runner.run_dir(spec, 0) / "metrics.jsonl").open()]
    assert [r["step"] for r in rows][-2:] == [3, 4]  # resumed after the step-2 checkpoint


@pytest.mark.parametrize(
    "seeds, overrides, message",
    [
        (0, {}, "--seeds 0"),
        (1, {"data": {"understanding_ratio": 1.0}}, "understanding_ratio=1.0"),
        (1, {"data": {"train_tasks": ["generation"]}}, "data.train_tasks"),
        (1, {"eval": {"at_end": False}}, "eval.at_end"),
    ],
)
def test_a_study_that_cannot_be_run_says_why_before_training(tmp_path, seeds, overrides, message):
    cfg = tiny_run_config(tmp_path / "unused", **overrides)
    with pytest.raises(TokredError, match=message):
        run_study(cfg, ["baseline"], seeds=seeds, out_dir=tmp_path / "s")
    assert not (tmp_path / "s" / "runs").exists()


@pytest.mark.parametrize(
    "arm, message",
    [
        ("fastest", "arm 'fastest'"),
        ("himix+hmgen@task", "arm 'himix\\+hmgen@task': reduction.generation"),
    ],
)
def test_bad_arms_fail_before_training(tmp_path, arm, message):
    with pytest.raises(TokredError, match=message):  # hmgen's default 3 shallow layers: too deep
        run_study(_config(tmp_path), [arm], seeds=1, out_dir=tmp_path / "s")
    assert not (tmp_path / "s" / "runs").exists()


def test_runs_in_worker_processes_give_the_records_of_one_process(tmp_path):
    config = tiny_run_config(tmp_path / "unused", optim={"max_steps": 2}, run={"threads": 1})
    kwargs = dict(seeds=1, num_understanding=2, num_generation=2, probe_samples=2)
    serial = run_study(config, ["baseline"], out_dir=tmp_path / "one", **kwargs)
    events: list[str] = []
    parallel = run_study(
        config, ["baseline"], out_dir=tmp_path / "two", jobs=2, on_event=events.append, **kwargs
    )
    assert sum(": trained (" in e for e in events) == 3
    assert parallel["jobs"] == 2
    for one, two in zip(serial["records"], parallel["records"], strict=True):
        assert (one["kind"], one["scores"], one["steps"]) == (
            two["kind"],
            two["scores"],
            two["steps"],
        )
    assert "side by side" in (tmp_path / "two" / REPORT_FILE).read_text()
    with pytest.raises(TokredError, match="--jobs 0"):
        run_study(config, ["baseline"], out_dir=tmp_path / "three", jobs=0, **kwargs)


def test_the_token_budget_gives_isolated_runs_the_unified_runs_tokens(tmp_path):
    from tokred_train.built_run import build_train_data
    from tokred_train.study.arms import parse_arm
    from tokred_train.study.cost import steps_for_tokens, training_tokens
    from tokred_train.study.runner import StudyRunner

    config = tiny_run_config(tmp_path / "unused", optim={"max_steps": 6})
    runner = StudyRunner(config, tmp_path / "s", budget="tokens")
    arm = parse_arm("baseline")
    data = build_train_data(config)
    unified_tokens = training_tokens(data, runner.run_config(arm, arm.runs()[0], 0, tmp_path))
    for spec in arm.runs()[1:]:
        iso = runner.run_config(arm, spec, 0, tmp_path)
        task = spec.train_tasks[0]
        assert iso.data.understanding_ratio == (1.0 if task == "understanding" else 0.0)
        steps = iso.optim.max_steps
        # The fewest steps whose tokens reach the unified run's.
        assert training_tokens(data, iso) >= unified_tokens
        fewer = runner.run_config(arm, spec, 0, tmp_path)
        fewer.optim.max_steps = steps - 1
        assert steps == 1 or training_tokens(data, fewer) < unified_tokens
        assert steps_for_tokens(data, iso, unified_tokens) == steps
    with pytest.raises(TokredError, match="budget 'flops'"):
        StudyRunner(config, tmp_path / "s", budget="flops")

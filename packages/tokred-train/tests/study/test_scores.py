"""What the study scores generation by: FID when the evaluation measured it (lower is
better, signed so that a positive synergy still means joint training helped), else the
detector, else the validation loss; the report names the kind in words."""

from __future__ import annotations

import json
import math
import pickle

import pytest
from tokred_core import TokredError
from tokred_train.study.aggregate import aggregate
from tokred_train.study.arms import parse_arm
from tokred_train.study.findings import findings
from tokred_train.study.report import render_report
from tokred_train.study.runner import RESULT_FILE, RunRecord, StudyRunner, _scores
from tokred_train.testing import save_tiny_feature_extractor, tiny_run_config

BOTH = ("understanding", "generation")
UNDERSTANDING = {"understanding": {"accuracy": 0.5}}


def test_scores_pick_fid_then_the_detector_then_the_validation_loss():
    metrics = {"val_loss_generation": 2.5}
    with_fid = {**UNDERSTANDING, "generation": {"accuracy": 0.25, "fid": 31.5}}
    assert _scores(with_fid, metrics, BOTH) == (
        {"understanding": 0.5, "generation": 31.5},
        {"understanding": "accuracy", "generation": "fid"},
    )
    detector = {"generation": {"accuracy": 0.25}}
    assert _scores(detector, metrics, ["generation"]) == (
        {"generation": 0.25},
        {"generation": "detector"},
    )
    unscored = {"generation": {"total": 4, "scored": False}}
    assert _scores(unscored, metrics, ["generation"]) == (
        {"generation": 2.5},
        {"generation": "val_loss"},
    )
    fid_only = {"generation": {"total": 4, "scored": False, "fid": 7.0}}
    assert _scores(fid_only, metrics, ["generation"]) == (
        {"generation": 7.0},
        {"generation": "fid"},
    )


def _record(arm: str, kind: str, seed: int, scores: dict[str, float], gen_kind: str = "fid"):
    kinds = {t: ("accuracy" if t == "understanding" else gen_kind) for t in scores}
    return RunRecord(arm, kind, seed, scores, kinds, 1.0, 100.0, None, 1000, 2)


def _records(gen_kind: str = "fid") -> list[RunRecord]:
    """Per seed: the unified run's FID 10 below the isolated one's (joint training helps
    generation), understanding 0.1 above."""
    out = []
    for arm in ("baseline", "himix+hmgen@task"):
        for seed in range(3):
            fid_unified = 20.0 + seed
            out += [
                _record(
                    arm,
                    "unified",
                    seed,
                    {"understanding": 0.6, "generation": fid_unified},
                    gen_kind,
                ),
                _record(arm, "isolated-understanding", seed, {"understanding": 0.5}, gen_kind),
                _record(
                    arm,
                    "isolated-generation",
                    seed,
                    {"generation": fid_unified + 10 + seed},
                    gen_kind,
                ),
            ]
    return out


def test_aggregate_signs_fid_so_that_positive_synergy_means_joint_training_helped():
    numbers = aggregate(_records(), ["baseline", "himix+hmgen@task"])
    assert numbers["score_kinds"] == {"understanding": "accuracy", "generation": "fid"}
    assert numbers["lower_is_better"] == {"understanding": False, "generation": True}
    base = numbers["arms"]["baseline"]
    assert base["synergy"]["generation"]["mean"] == pytest.approx(11.0)  # 10, 11, 12
    assert base["synergy"]["understanding"]["mean"] == pytest.approx(0.1)
    assert base["runs"]["unified"]["generation"]["per_seed"] == {"0": 20.0, "1": 21.0, "2": 22.0}
    kept = numbers["arms"]["himix+hmgen@task"]["synergy_kept"]["generation"]
    assert kept["mean"] == pytest.approx(1.0)
    # Δm%: unified FID below the isolated one counts as a gain.
    assert numbers["arms"]["baseline"]["delta_m_percent"]["mean"] > 0


def test_runs_scored_by_different_kinds_are_refused():
    records = _records()
    records[-1] = _record(
        "himix+hmgen@task", "isolated-generation", 2, {"generation": 0.3}, "detector"
    )
    with pytest.raises(TokredError, match="scored generation by detector, other runs by fid"):
        aggregate(records, ["baseline", "himix+hmgen@task"])


def test_the_report_names_fid_in_words_and_shows_it_unscaled():
    numbers = aggregate(_records(), ["baseline", "himix+hmgen@task"])
    study = {**numbers, "seeds": [0, 1, 2], "budget": "matched", "jobs": 1}
    study["findings"] = findings(numbers, None)
    report = render_report(study)
    assert "generation: FID against the validation images" in report
    assert "lower is better" in report and "understanding: exact-match accuracy, in %" in report
    assert "| baseline | unified | 60.0 [60.0, 60.0] | 21.0 [" in report  # FID not x100
    assert "(synergy 11.0 [" in report and "FID)." in report


def test_a_study_run_with_fid_weights_is_scored_by_fid(tmp_path):
    weights = save_tiny_feature_extractor(tmp_path / "inception.pt")
    cfg = tiny_run_config(tmp_path / "unused", optim={"max_steps": 2})
    missing = StudyRunner(cfg, tmp_path / "s0", fid_weights=tmp_path / "absent.pt")
    with pytest.raises(TokredError, match=f"FID weights {tmp_path / 'absent.pt'} not found"):
        missing.check([parse_arm("baseline")], [0])
    runner = StudyRunner(
        cfg, tmp_path / "s", num_understanding=2, num_generation=3, fid_weights=weights
    )
    # What a worker process is given: picklable, and it rebuilds the same runner.
    again = StudyRunner(**pickle.loads(pickle.dumps(runner._settings())))
    assert again.fid_weights == weights
    arm = parse_arm("baseline")
    unified = next(spec for spec in arm.runs() if spec.kind == "unified")
    record = runner.run(arm, unified, 0)
    assert record.score_kinds == {"understanding": "accuracy", "generation": "fid"}
    assert math.isfinite(record.scores["generation"])
    saved = json.loads((runner.run_dir(unified, 0) / RESULT_FILE).read_text())
    assert saved["score_kinds"]["generation"] == "fid"
    ev = json.loads((runner.run_dir(unified, 0) / "eval" / "eval.json").read_text())
    assert (
        ev["generation"]["fid"] == record.scores["generation"]
        and ev["generation"]["fid_images"] == 3
    )

"""Issue 10's goal read off synthetic study records: met (on the means, and beyond seed
noise), not met with how close each arm came, not measurable; and its report lines."""

from __future__ import annotations

from tokred_train.study.aggregate import aggregate
from tokred_train.study.findings import findings
from tokred_train.study.goal import goal
from tokred_train.study.report import render_report
from tokred_train.study.runner import RunRecord

KINDS = {"understanding": "accuracy", "generation": "detector"}
BASE_SYNERGY = (0.20, 0.22, 0.18)


def _records(arms: dict[str, tuple[float, float, float]], base_synergy=BASE_SYNERGY):
    """arms: name -> (synergy kept, FLOPs ratio, step-time ratio). Understanding gains
    from joint training in the baseline; generation does not (so the goal skips it)."""
    out = []
    table = {"baseline": (1.0, 1.0, 1.0), **arms}
    for arm, (kept, flops, time) in table.items():
        for seed, synergy in enumerate(base_synergy):
            jitter = 0.002 * seed  # the intervals need some spread
            iso = {"understanding": 0.4 + jitter, "generation": 0.5}
            uni = {"understanding": iso["understanding"] + kept * synergy}
            uni["generation"] = 0.5 + (0.01 if seed == 1 else -0.01)
            step = time * (1 + 0.01 * (seed - 1))
            out.append(
                RunRecord(arm, "unified", seed, uni, KINDS, step, 1.0, None, int(1e6 * flops), 4)
            )
            for task in KINDS:
                kind = f"isolated-{task}"
                score = {task: iso[task]}
                out.append(
                    RunRecord(arm, kind, seed, score, {task: KINDS[task]}, 1.0, 1.0, None, 10**6, 4)
                )
    return out


def _study(arms, **kwargs):
    records = _records(arms, **kwargs)
    numbers = aggregate(records, ["baseline", *arms])
    return {
        **numbers,
        "budget": "matched",
        "findings": findings(numbers, None),
        "records": [r.to_dict() for r in records],
    }


def test_an_arm_that_keeps_the_synergy_cheaper_and_faster_meets_the_goal():
    study = _study({"good": (0.97, 0.5, 0.9), "costly": (1.0, 0.8, 0.9)})
    g = study["findings"]["goal"]
    assert g["tasks"] == ["understanding"]  # generation shows no baseline synergy
    assert (g["verdict"], g["met_by"]) == ("met", ["good"])
    good = g["arms"]["good"]
    assert good["checks"] == {"kept_understanding": True, "flops": True, "step_time": True}
    assert good["shown"] == (good["synergy_kept"]["understanding"]["low"] >= 0.9)
    assert g["arms"]["costly"]["checks"]["flops"] is False
    assert abs(g["arms"]["costly"]["short_by"]["flops"] - 0.2) < 1e-9
    report = render_report(study)
    assert "Issue 10's goal" in report and "**met** by good" in report
    assert "| good | " in report and "| costly | " in report


def test_when_no_arm_meets_the_goal_the_finding_says_how_close_each_came():
    study = _study({"lossy": (0.5, 0.55, 0.95), "slow": (0.95, 0.5, 1.2)})
    g = study["findings"]["goal"]
    assert (g["verdict"], g["met_by"]) == ("not met", [])
    assert abs(g["arms"]["lossy"]["short_by"]["kept_understanding"] - 0.4) < 1e-6
    assert abs(g["arms"]["slow"]["short_by"]["step_time"] - 0.2) < 1e-6
    report = render_report(study)
    line = next(x for x in report.splitlines() if x.startswith("- Issue 10's goal"))
    assert "**not met** by any arm" in line
    assert "lossy: kept on understanding +0.400 off" in line
    assert "slow: step time +0.200 off" in line


def test_without_baseline_synergy_the_goal_is_not_measurable():
    study = _study({"any": (1.0, 0.5, 0.9)}, base_synergy=(0.05, -0.05, 0.0))
    g = goal(study)
    assert g["verdict"] == "not measurable" and "no task shows" in g["why"]
    assert "not measurable" in render_report(study)

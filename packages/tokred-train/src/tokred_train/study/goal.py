"""Issue 10's goal, read off the study's numbers: does an arm keep the synergy of joint
training at a fraction of its cost?

    keeps at least 90% of the baseline synergy on each task that shows synergy, at no
    more than 0.6x the baseline's training FLOPs, with a measured step time below the
    baseline's

A task shows synergy when the baseline's synergy interval lies above 0 (finding (b)'s
"yes"): kept is a ratio to it, which means nothing where it may be 0. The costs are the
unified runs' (the joint training being accelerated), paired by seed. An arm meets the
goal on the means; it meets it beyond seed noise ("shown") when the intervals do too:
kept's lower bound at least 0.9 on each task, the step-time ratio's upper bound below 1.
Every arm gets its numbers and how far each one is from its line, so a study where none
meets it says how close each came.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["GOAL", "goal", "synergy_tasks"]

#: The lines of the goal: synergy kept >= kept, FLOPs ratio <= flops, step time < step_time.
GOAL = {"kept": 0.9, "flops": 0.6, "step_time": 1.0}


def synergy_tasks(numbers: Mapping[str, Any]) -> list[str]:
    """The tasks whose baseline synergy interval lies above 0."""
    base = numbers["arms"].get("baseline", {}).get("synergy", {})
    return [t for t, est in base.items() if est.get("low") is not None and est["low"] > 0]


def _mean(est: Mapping[str, Any] | None) -> float | None:
    return None if not est else est.get("mean")


def _arm_row(numbers: Mapping[str, Any], arm: str, tasks: list[str]) -> dict[str, Any]:
    """One arm against the goal: its numbers, each line's check and the distance to it
    (positive: short of the line by that much)."""
    a = numbers["arms"][arm]
    cost = a["cost"].get("unified", {})
    kept = {t: a["synergy_kept"].get(t) for t in tasks}
    flops, time = cost.get("flops_ratio"), cost.get("step_time_ratio")
    short: dict[str, float | None] = {}
    for t in tasks:
        m = _mean(kept[t])
        short[f"kept_{t}"] = None if m is None else GOAL["kept"] - m
    short["flops"] = None if _mean(flops) is None else _mean(flops) - GOAL["flops"]
    short["step_time"] = None if _mean(time) is None else _mean(time) - GOAL["step_time"]
    checks = {
        name: None if gap is None else (gap < 0 if name == "step_time" else gap <= 0)
        for name, gap in short.items()
    }
    met = bool(checks) and all(checks.values())
    bounded = all((kept[t] or {}).get("low") is not None for t in tasks)
    shown = (
        met
        and bounded
        and all(kept[t]["low"] >= GOAL["kept"] for t in tasks)
        and (time or {}).get("high") is not None
        and time["high"] < GOAL["step_time"]
    )
    return {
        "synergy_kept": kept,
        "flops_ratio": flops,
        "step_time_ratio": time,
        "checks": checks,
        "short_by": short,
        "met": met,
        "shown": bool(shown),
    }


def goal(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """{"verdict": "met" | "not met" | "not measurable", "tasks": the tasks with
    synergy, "met_by": [arms], "arms": {arm: _arm_row}, "goal": GOAL}."""
    tasks = synergy_tasks(numbers)
    arms = [a for a in numbers["arms"] if a != "baseline"]
    out: dict[str, Any] = {"goal": dict(GOAL), "tasks": tasks, "met_by": [], "arms": {}}
    if not tasks or not arms:
        out["verdict"] = "not measurable"
        out["why"] = (
            "no accelerated arm" if not arms else "no task shows baseline synergy (interval > 0)"
        )
        return out
    out["arms"] = {arm: _arm_row(numbers, arm, tasks) for arm in arms}
    out["met_by"] = [arm for arm, row in out["arms"].items() if row["met"]]
    out["verdict"] = "met" if out["met_by"] else "not met"
    return out

"""Whether the paper's findings reproduce, read off the study's numbers.

(a) the asymmetry: in the baseline model, understanding's image share falls from the
    early layers to the late ones, while generation keeps attending to its image tokens;
(b) unified beats isolated: each task's baseline synergy is positive with its interval
    above 0;
(c) synergy is lost under share all (`@modality`) and partly recovered under share partial
    (`@task`): kept below 1 with the interval below 1 under share all, and share partial
    keeping more than share all.

Each verdict is "yes", "no" or "not shown" (the intervals overlap the line), with the
numbers it rests on. Then issue 10's goal (study/goal.py): whether an arm keeps 90% of the
synergy at 0.6x the FLOPs and a faster step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .goal import goal

__all__ = ["asymmetry", "findings", "layer_thirds"]


def layer_thirds(values: Sequence[float]) -> tuple[float, float]:
    """(mean of the first third of layers, mean of the last third), at least one layer each."""
    n = len(values)
    k = max(1, n // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def asymmetry(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """From `allocation_summary` of each task: late/early ratios of the image share."""
    out: dict[str, Any] = {}
    for task in ("understanding", "generation"):
        shares = summaries.get(task, {}).get("image_share_per_layer")
        if not shares:
            return {"verdict": "not shown", "why": f"no allocation for {task}"}
        early, late = layer_thirds(shares)
        out[task] = {
            "early": early,
            "late": late,
            "late_over_early": late / early if early else None,
        }
    u, g = out["understanding"]["late_over_early"], out["generation"]["late_over_early"]
    holds = u is not None and g is not None and u < 1 and g > u
    out["verdict"] = "yes" if holds else "no"
    out["layers"] = len(summaries["understanding"]["image_share_per_layer"])
    return out


def _verdict_positive(est: Mapping[str, Any]) -> str:
    if est.get("low") is None:
        return "not shown"
    if est["low"] > 0:
        return "yes"
    if est["high"] < 0:
        return "no"
    return "not shown"


def _sharing_arms(arms: Mapping[str, Any], sharing: str) -> list[str]:
    return [name for name in arms if name.endswith(f"@{sharing}")]


def findings(numbers: Mapping[str, Any], allocation: Mapping[str, Any] | None) -> dict[str, Any]:
    arms = numbers["arms"]
    base = arms.get("baseline", {})
    out: dict[str, Any] = {"a_asymmetry": asymmetry(allocation) if allocation else None}
    out["b_unified_beats_isolated"] = {
        task: {"verdict": _verdict_positive(est), "synergy": est}
        for task, est in base.get("synergy", {}).items()
    }
    c: dict[str, Any] = {}
    for task, base_synergy in base.get("synergy", {}).items():
        if base_synergy.get("mean") is None or base_synergy["mean"] <= 0:
            c[task] = {"verdict": "not measurable", "why": "the baseline shows no synergy"}
            continue
        all_arms = _sharing_arms(arms, "modality")
        part_arms = _sharing_arms(arms, "task")
        entry: dict[str, Any] = {}
        for name in all_arms + part_arms:
            entry[name] = arms[name]["synergy_kept"].get(task)
        lost = [
            arms[n]["synergy_kept"][task]["lost"]
            for n in all_arms
            if task in arms[n]["synergy_kept"]
        ]
        entry["lost_under_share_all"] = (
            "yes"
            if lost and all(x.get("high") is not None and x["high"] < 0 for x in lost)
            else (
                "no"
                if lost and all(x.get("low") is not None and x["low"] >= 0 for x in lost)
                else "not shown"
            )
        )
        pairs = [
            (arms[a]["synergy_kept"][task].get("mean"), arms[p]["synergy_kept"][task].get("mean"))
            for a in all_arms
            for p in part_arms
            if a.split("@")[0] == p.split("@")[0]
        ]
        entry["partly_recovered_under_share_partial"] = (
            "yes"
            if pairs and all(a is not None and p is not None and p > a for a, p in pairs)
            else ("no" if pairs else "not shown")
        )
        c[task] = entry
    out["c_synergy_lost_and_recovered"] = c
    out["goal"] = goal(numbers)
    return out

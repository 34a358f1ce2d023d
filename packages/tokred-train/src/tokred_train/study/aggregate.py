"""From the study's run records to its numbers: per arm and task, per-seed scores, means
and intervals; synergy (unified minus isolated, within each seed) and synergy kept (an
accelerated arm's synergy over the baseline's); Δm%; and each arm's cost against the
baseline (cost-model FLOPs, measured step time, tokens/s, peak memory).

Signs: a score where lower is better (a validation loss, FID) is turned so that a
positive synergy always means joint training helped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokred_core import TASK_NAMES, TokredError

from .arms import BASELINE
from .runner import RunRecord
from .stats import Estimate, delta_m, estimate, paired_difference, ratio_estimate

__all__ = ["aggregate"]

_LOWER_IS_BETTER = {"accuracy": False, "detector": False, "val_loss": True, "fid": True}
UNIFIED = "unified"


def _per_seed(records: Sequence[RunRecord], arm: str, kind: str, task: str) -> dict[int, float]:
    return {
        r.seed: r.scores[task]
        for r in records
        if r.arm == arm and r.kind == kind and task in r.scores
    }


def _signed(values: dict[int, float], lower: bool) -> dict[int, float]:
    return {s: -v for s, v in values.items()} if lower else values


def _synergy(records, arm: str, task: str, lower: bool) -> dict[int, float]:
    """Per seed: the arm's unified score minus its isolated score (signed: + is better)."""
    uni = _signed(_per_seed(records, arm, UNIFIED, task), lower)
    iso = _signed(_per_seed(records, arm, f"isolated-{task}", task), lower)
    return {s: uni[s] - iso[s] for s in sorted(set(uni) & set(iso))}


def _ratio(records, arm: str, kind: str, field: str) -> Estimate:
    """Per seed: this arm's value of `field` over the baseline's, for the same run kind."""
    mine = {r.seed: getattr(r, field) for r in records if r.arm == arm and r.kind == kind}
    base = {r.seed: getattr(r, field) for r in records if r.arm == BASELINE and r.kind == kind}
    seeds = [s for s in sorted(set(mine) & set(base)) if mine[s] and base[s]]
    return estimate([mine[s] / base[s] for s in seeds])


def _delta_m(records, arm: str, kinds: dict[str, str]) -> Estimate:
    """Per seed: Δm% of the arm's unified run against the baseline's isolated runs."""
    lower = {t: _LOWER_IS_BETTER[k] for t, k in kinds.items()}
    uni = {t: _per_seed(records, arm, UNIFIED, t) for t in kinds}
    iso = {t: _per_seed(records, BASELINE, f"isolated-{t}", t) for t in kinds}
    seeds = set.intersection(*(set(uni[t]) & set(iso[t]) for t in kinds)) if kinds else set()
    values = []
    for s in sorted(seeds):
        try:
            values.append(
                delta_m({t: uni[t][s] for t in kinds}, {t: iso[t][s] for t in kinds}, lower)
            )
        except ValueError:
            continue  # an isolated score of 0: no relative change for that seed
    return estimate(values)


def _conflict(records, arm: str) -> dict[str, Any] | None:
    """The unified runs' model-wide gradient cosine by layer: mean and interval over seeds."""
    profiles = [r.conflict for r in records if r.arm == arm and r.kind == UNIFIED and r.conflict]
    if not profiles:
        return None
    layers = profiles[0]["layers"]
    out: dict[str, Any] = {"layers": layers}
    for key in ("cosine", "adjusted_cosine"):
        out[key] = [
            estimate([p[key][i] for p in profiles if p[key][i] is not None]).to_dict()
            for i in range(len(layers))
        ]
    return out


def _arm_numbers(records, arm: str, kinds: dict[str, str]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for kind in sorted({r.kind for r in records if r.arm == arm}):
        runs[kind] = {}
        for task in kinds:
            values = _per_seed(records, arm, kind, task)
            if values:
                runs[kind][task] = {
                    "per_seed": {str(s): v for s, v in values.items()},
                    "estimate": estimate(list(values.values())).to_dict(),
                }
    synergy, kept = {}, {}
    for task, kind in kinds.items():
        lower = _LOWER_IS_BETTER[kind]
        mine = _synergy(records, arm, task, lower)
        synergy[task] = estimate(list(mine.values())).to_dict()
        if arm != BASELINE:
            base = _synergy(records, BASELINE, task, lower)
            kept[task] = ratio_estimate(mine, base).to_dict()
            kept[task]["lost"] = paired_difference(mine, base).to_dict()
    cost = {
        kind: {
            "flops_ratio": _ratio(records, arm, kind, "flops_per_step").to_dict(),
            "step_time_ratio": _ratio(records, arm, kind, "step_time_s").to_dict(),
            "tokens_per_s_ratio": _ratio(records, arm, kind, "tokens_per_s").to_dict(),
            "peak_memory_ratio": _ratio(records, arm, kind, "peak_memory_bytes").to_dict(),
        }
        for kind in runs
    }
    return {
        "runs": runs,
        "conflict": _conflict(records, arm),
        "synergy": synergy,
        "synergy_kept": kept,
        "delta_m_percent": _delta_m(records, arm, kinds).to_dict(),
        "cost": cost,
    }


def aggregate(records: Sequence[RunRecord], arms: Sequence[str]) -> dict[str, Any]:
    """Every number of the study, JSON-ready (see the module docstring)."""
    kinds: dict[str, str] = {}
    for r in records:
        for task, kind in r.score_kinds.items():
            if kinds.setdefault(task, kind) != kind:
                # e.g. a study resumed with --fid-weights over runs scored by the detector:
                # their numbers do not compare.
                raise TokredError(
                    f"{r.arm} {r.kind} seed {r.seed} scored {task} by {kind}, other runs by "
                    f"{kinds[task]}: rerun the study into a new --out, with the same options"
                )
    kinds = {t: kinds[t] for t in TASK_NAMES if t in kinds}
    return {
        "score_kinds": kinds,
        "lower_is_better": {t: _LOWER_IS_BETTER[k] for t, k in kinds.items()},
        "seeds": sorted({r.seed for r in records}),
        "arms": {arm: _arm_numbers(records, arm, kinds) for arm in arms},
    }

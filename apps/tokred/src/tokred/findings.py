"""What the demo concludes from its numbers: is a run clearly above chance, what is the
accuracy over the question types that can be wrong, and which allocation numbers a report
needs. Plain dicts in and out (no torch, no matplotlib), so metrics.json holds the
verdicts next to the numbers they come from; `tokred.report` renders them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ABOVE_CHANCE_MARGIN",
    "above_chance",
    "allocation_digest",
    "nontrivial_understanding",
]

#: "Clearly above chance": at least this many points (absolute) over the chance level,
#: and (understanding) over always giving each type's most frequent answer.
ABOVE_CHANCE_MARGIN = 0.10


def nontrivial_understanding(u: dict[str, Any]) -> dict[str, float] | None:
    """Accuracy and chance over the question types with more than one possible answer
    (the count question is trivial when every image holds one shape)."""
    types = [t for t in u["per_type"].values() if t["num_answers"] > 1]
    n = sum(t["total"] for t in types)
    if not n:
        return None
    return {
        "accuracy": sum(t["correct"] for t in types) / n,
        "chance": sum(t["chance"] * t["total"] for t in types) / n,
        "majority": sum(t["majority"] * t["total"] for t in types) / n,
        "total": n,
    }


def above_chance(
    runs: dict[str, dict[str, Any]], margin: float = ABOVE_CHANCE_MARGIN
) -> dict[str, Any]:
    """Per run: is each task clearly above chance? (see ABOVE_CHANCE_MARGIN)."""
    out: dict[str, Any] = {
        "margin": margin,
        "rule": (
            "understanding: exact match over the non-trivial question types >= chance + margin "
            "and > the majority answer; generation: all checked attributes right >= chance + margin"
        ),
    }
    for name, run in runs.items():
        entry: dict[str, Any] = {}
        u = run.get("understanding")
        if u:
            nt = nontrivial_understanding(u) or {
                "accuracy": u["accuracy"],
                "chance": u["chance"],
                "majority": u["majority"],
            }
            entry["understanding"] = bool(
                nt["accuracy"] >= nt["chance"] + margin and nt["accuracy"] > nt["majority"]
            )
            entry["understanding_types"] = {
                k: bool(t["accuracy"] >= t["chance"] + margin)
                for k, t in u["per_type"].items()
                if t["num_answers"] > 1
            }
        g = run.get("generation")
        if g and g.get("per_attribute"):
            entry["generation"] = bool(g["accuracy"] >= g["chance"]["all"] + margin)
            entry["generation_attributes"] = {
                a: bool(g["per_attribute"][a] >= g["chance"][a] + margin)
                for a in ("kind", "color", "position")
            }
        out[name] = entry
    return out


def allocation_digest(alloc: dict[str, Any]) -> dict[str, Any]:
    """The allocation numbers a report needs (the full tables stay in allocation.json)."""
    out: dict[str, Any] = {"policy": alloc.get("policy")}
    for task in ("understanding", "generation"):
        entry = alloc.get(task)
        if not entry:
            continue
        out[task] = {
            k: entry.get(k)
            for k in (
                "num_samples",
                "segments",
                "shares",
                "first_layer",
                "last_layer",
                "image_segment",
                "image_share_per_layer",
                "image_share_first",
                "image_share_last",
                "image_share_middle_mean",
                "image_share_min_layer",
                "image_share_max_layer",
                "top_segment_per_layer",
                "image_share_by_query_segment",
            )
        }
    return out

"""report.md of a synergy study, from what study.json holds: no number here that is not
there too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SCORE_KIND_WORDS", "render_report", "score_scale"]

#: What each score kind (study.json's score_kinds) is, as the report says it.
SCORE_KIND_WORDS = {
    "accuracy": "exact-match accuracy, in %",
    "detector": "share of images the shapes detector passes, in %",
    "val_loss": "validation image-token loss x100, lower is better",
    "fid": "FID against the validation images (their VQ reconstructions on real data), "
    "lower is better",
}


def score_scale(kind: str) -> float:
    """The factor a kind's scores and synergies are shown at: x100 for shares (and the
    loss, as before); FID as it is, the unit every FID is quoted in."""
    return 1.0 if kind == "fid" else 100.0


def _ci(est: Mapping[str, Any] | None, scale: float = 100.0, unit: str = "") -> str:
    if not est or est.get("mean") is None:
        return "-"
    mean = est["mean"] * scale
    if est.get("low") is None:
        return f"{mean:.1f}{unit} (n={est.get('n', 0)}, no interval)"
    return f"{mean:.1f}{unit} [{est['low'] * scale:.1f}, {est['high'] * scale:.1f}]"


def _ratio(est: Mapping[str, Any] | None) -> str:
    if not est or est.get("mean") is None:
        return "-"
    if est.get("low") is None:
        return f"{est['mean']:.3f}x"
    return f"{est['mean']:.3f}x [{est['low']:.3f}, {est['high']:.3f}]"


def _scores_table(study: Mapping[str, Any]) -> list[str]:
    tasks = list(study["score_kinds"])
    lines = [
        "| arm | run | " + " | ".join(tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    for arm in study["arms"]:
        for kind, per_task in study["arms"][arm]["runs"].items():
            cells = [
                _ci(per_task.get(t, {}).get("estimate"), score_scale(study["score_kinds"][t]))
                for t in tasks
            ]
            lines.append(f"| {arm} | {kind} | " + " | ".join(cells) + " |")
    return lines


def _synergy_table(study: Mapping[str, Any]) -> list[str]:
    tasks = list(study["score_kinds"])
    head = " | ".join(f"{t} synergy | {t} kept" for t in tasks)
    lines = [f"| arm | {head} | Δm% |", "|---|" + "---|---|" * len(tasks) + "---|"]
    base = study["arms"].get("baseline", {}).get("synergy", {})
    for arm in study["arms"]:
        a = study["arms"][arm]
        cells = []
        for t in tasks:
            kept = a["synergy_kept"].get(t)
            if not kept:
                shown = "1 (the reference)"
            elif not (base.get(t) or {}).get("mean") or base[t]["mean"] <= 0:
                shown = "- (no baseline synergy to keep)"
            else:
                shown = _ratio(kept)
            cells += [_ci(a["synergy"].get(t), score_scale(study["score_kinds"][t])), shown]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_ci(a['delta_m_percent'], 1.0)} |")
    return lines


def _cost_table(study: Mapping[str, Any]) -> list[str]:
    lines = [
        "| arm | run | FLOPs ratio | step-time ratio | tokens/s ratio | peak memory ratio |",
        "|---|---|---|---|---|---|",
    ]
    for arm in study["arms"]:
        for kind, c in study["arms"][arm]["cost"].items():
            cells = [c["flops_ratio"], c["step_time_ratio"], c["tokens_per_s_ratio"]]
            cells.append(c["peak_memory_ratio"])
            lines.append(f"| {arm} | {kind} | " + " | ".join(_ratio(x) for x in cells) + " |")
    return lines


def _conflict_table(study: Mapping[str, Any]) -> list[str]:
    rows = [(arm, a["conflict"]) for arm, a in study["arms"].items() if a.get("conflict")]
    if not rows:
        return ["Not measured (run.conflict_every is 0)."]
    layers = rows[0][1]["layers"]
    names = ["all" if x is None else f"L{x}" for x in layers]
    lines = [
        "Cosine between the tasks' gradients in the unified runs (model-wide per layer; "
        "'all' is the whole model), mean over measurements and seeds, then the Uni-X "
        "adjusted cosine (minus the cosine of two random halves of mixed data: compare "
        "arms, not the sign).",
        "",
        "| arm | value | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for arm, c in rows:
        for key in ("cosine", "adjusted_cosine"):
            cells = [f"{e['mean']:.3f}" if e.get("mean") is not None else "-" for e in c[key]]
            lines.append(f"| {arm} | {key} | " + " | ".join(cells) + " |")
    return lines


def _findings(study: Mapping[str, Any]) -> list[str]:
    f = study["findings"]
    lines = []
    a = f.get("a_asymmetry")
    if a and "understanding" in a:
        u, g = a["understanding"], a["generation"]
        lines.append(
            f"- (a) asymmetry: **{a['verdict']}**. Image share, first third -> last third of "
            f"{a['layers']} layers: understanding {u['early']:.1%} -> {u['late']:.1%}, "
            f"generation {g['early']:.1%} -> {g['late']:.1%} (baseline unified model, "
            f"seed {study['seeds'][0]}; one model, no interval)."
        )
    else:
        lines.append("- (a) asymmetry: not measured (no baseline unified run).")
    for task, entry in f["b_unified_beats_isolated"].items():
        kind = study["score_kinds"].get(task, "")
        lines.append(
            f"- (b) unified beats isolated on {task}: **{entry['verdict']}** "
            f"(synergy {_ci(entry['synergy'], score_scale(kind))} "
            f"{'FID' if kind == 'fid' else 'points'})."
        )
    base = study["arms"].get("baseline", {}).get("synergy", {})
    for task, entry in f["c_synergy_lost_and_recovered"].items():
        if not (base.get(task) or {}).get("mean") or base[task]["mean"] <= 0:
            lines.append(f"- (c) {task}: not measurable: the baseline shows no synergy to keep.")
            continue
        kept = ", ".join(
            f"{name} keeps {_ratio(v)}" for name, v in entry.items() if isinstance(v, dict)
        )
        lines.append(
            f"- (c) {task}: synergy lost under share all: **{entry['lost_under_share_all']}**; "
            "partly recovered under share partial (means): "
            f"**{entry['partly_recovered_under_share_partial']}**. {kept or 'no accelerated arm'}."
        )
    return lines + _goal_lines(study)


def _gaps(row: Mapping[str, Any]) -> str:
    """How far each missed line is, in words: what 'how close it came' means."""
    words = []
    for name, gap in row["short_by"].items():
        if gap is None:
            words.append(f"{name.replace('_', ' ')} not measured")
        elif not row["checks"][name]:
            words.append(f"{name.replace('kept_', 'kept on ').replace('_', ' ')} {gap:+.3f} off")
        # a line met is not repeated: the table has every number
    return ", ".join(words) or "every line met"


def _goal_lines(study: Mapping[str, Any]) -> list[str]:
    g = study["findings"].get("goal")
    if not g:
        return []
    line = (
        f"- Issue 10's goal (keep >= {g['goal']['kept']:.0%} of the baseline synergy on each "
        f"task that shows it, at <= {g['goal']['flops']}x its training FLOPs, with a step time "
        f"below its): **{g['verdict']}**"
    )
    if g["verdict"] == "not measurable":
        return [f"{line}: {g['why']}."]
    tasks = ", ".join(g["tasks"])
    if g["met_by"]:
        shown = [a for a in g["met_by"] if g["arms"][a]["shown"]]
        line += f" by {', '.join(g['met_by'])} (on {tasks}; beyond seed noise: "
        line += f"{', '.join(shown) if shown else 'none'})."
        return [line]
    closest = ", ".join(f"{arm}: {_gaps(row)}" for arm, row in g["arms"].items())
    return [f"{line} by any arm (on {tasks}). How close each came: {closest}."]


def _goal_table(study: Mapping[str, Any]) -> list[str]:
    g = study["findings"].get("goal")
    if not g or not g["arms"]:
        return ["Not measurable: " + (g or {}).get("why", "no goal in this study.json") + "."]
    tasks = g["tasks"]
    lines = [
        "Each accelerated arm's unified run against the baseline's (kept on the tasks whose "
        "baseline synergy interval lies above 0); FLOPs: cost model, strategy included.",
        "",
        "| arm | " + " | ".join(f"{t} kept" for t in tasks)
        + " | FLOPs ratio | step-time ratio | goal |",
        "|---|" + "---|" * len(tasks) + "---|---|---|",
    ]  # fmt: skip
    for arm, row in g["arms"].items():
        cells = [_ratio(row["synergy_kept"][t]) for t in tasks]
        cells += [_ratio(row["flops_ratio"]), _ratio(row["step_time_ratio"])]
        verdict = (
            "met, beyond seed noise"
            if row["shown"]
            else ("met on the means" if row["met"] else _gaps(row))
        )
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


_BUDGET_TEXT = {
    "matched": "an isolated run trains on exactly the unified run's samples of its task, in "
    "the same order and over the same optimizer steps.",
    "full-batch": "an isolated run fills whole batches with its task (the unified run's steps "
    "and samples per step).",
    "tokens": "equal compute: an isolated run fills whole batches with its task for as many "
    "steps as it takes to train on as many tokens as the unified run (steps and tokens per "
    "run in the cost table).",
}


def render_report(study: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    seeds = study["seeds"]
    kinds = "; ".join(f"{t}: {SCORE_KIND_WORDS.get(k, k)}" for t, k in study["score_kinds"].items())
    lines = [
        "# Synergy study",
        "",
        f"Arms: {', '.join(study['arms'])}. Seeds: {', '.join(map(str, seeds))} (paired: the same "
        "initial weights and batch order in every arm). Budget: "
        + _BUDGET_TEXT[study["budget"]]
        + (
            f" Runs trained {study['jobs']} at a time, so step times were measured side by "
            "side with other runs."
            if study.get("jobs", 1) > 1
            else ""
        ),
        f"Scores ({kinds}) are means with 95% t-intervals over seeds; synergy is unified "
        "minus isolated within each seed, in the score's units (signed so that + means "
        "joint training helped); kept "
        "is an arm's synergy over the baseline's, with Fieller's interval (none shown: not "
        "bounded at these seeds).",
        "",
        "## Findings",
        "",
        *_findings(study),
        "",
        "## Scores",
        "",
        *_scores_table(study),
        "",
        "## Synergy",
        "",
        *_synergy_table(study),
        "",
        "## Synergy kept against cost (issue 10's goal)",
        "",
        *_goal_table(study),
        "",
        "## Gradient conflict",
        "",
        *_conflict_table(study),
        "",
        "## Cost against the baseline (same run kind, paired by seed)",
        "",
        *_cost_table(study),
        "",
    ]
    if figures:
        lines += ["## Figures", "", *(f"- [{name}]({name})" for name in figures), ""]
    return "\n".join(lines)

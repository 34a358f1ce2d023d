"""The demo's report: metrics.json's numbers as a readable markdown page.

Pure formatting (no torch, no matplotlib): every number comes from the metrics dict that
`tokred demo` writes (its verdicts from `tokred.findings`), so the page can be re-rendered
from metrics.json alone:

    python -c "import json,tokred.report as r; print(r.render_report(json.load(open('metrics.json'))))"
"""

from __future__ import annotations

from typing import Any

from .findings import nontrivial_understanding

__all__ = ["render_report", "render_summary"]

_PAPER_UND = "image ~33% at layer 0, <10% in middle and late layers (pies: 32.6% -> 7.5%)"
_PAPER_GEN = "output (image) tokens 39.7% at layer 0 -> 56.4% at the last layer"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _shapes_per_image(data: dict[str, Any]) -> str:
    most = int(data.get("max_shapes", 1))
    return "one shape" if most == 1 else f"1 to {most} shapes"


# ---- the page ---------------------------------------------------------------------------------
def _setup(m: dict[str, Any]) -> list[str]:
    s = m["setup"]
    base = s["config"]["base"]
    d, o = base["data"], base["optim"]
    shape = s["decoder_shape"]
    data = s.get("data", {})
    red = s["config"]["reduction"]
    gen_opts = red["generation"].get("options", {})
    mach = m["machine"]
    b = m["runs"]["baseline"]["train"]
    lines = [
        "## Setup",
        "",
        f"- **Data**: the embedded synthetic shapes set, {data.get('train_images', d['num_train'])} training and "
        f"{data.get('val_images', d['num_val'])} validation images ({d['image_size']}x{d['image_size']} px, "
        f"{_shapes_per_image(d)} per image, each one of 3 kinds x 4 colours x 2 sizes in one of 4 "
        "grid cells; validation scenes never occur in training). Each image gives one generation "
        "sample (caption -> image) and understanding questions (kind, colour, position, count).",
        f"- **Image tokens**: patch k-means VQ, {d['patch_size']}x{d['patch_size']} patches, codebook "
        f"{d['codebook_size']} -> {s['tokens_per_image']} tokens per image; unified vocabulary of "
        f"{s['vocab_size']} ids (text words + specials + image codes). Both runs use the very same data, "
        f"VQ and vocabulary ({'checked' if s.get('same_vocab_and_vq') else 'NOT identical'}).",
        f"- **Model**: tiny Llama decoder from scratch, {shape['num_layers']} layers, d={shape['hidden_size']}, "
        f"FFN {shape['intermediate_size']}, {shape['num_heads']} heads / {shape['num_kv_heads']} KV heads, "
        f"{b.get('total_parameters') or 'n/a'} parameters (baseline).",
        f"- **Training**: {s['steps']} steps per run, batch {o['batch_size']} "
        f"({100 * d['understanding_ratio']:.0f}% understanding samples), AdamW lr {o['lr']} "
        f"(warm-up {o['warmup_steps']}, cosine), seed {base['run']['seed']}; both runs start from the same weights.",
        "- **Runs**: `baseline` = no reduction; `reduced` = HiMix for understanding (image tokens only as "
        f"keys/values from layer 0) + HMGen for generation ({gen_opts.get('num_shallow', 3)} shallow layer(s): "
        f"image tokens skip them) with image projections per task (sharing `{red['sharing']}`, the paper's "
        '"share partial").',
        f"- **Machine**: {mach['cpu_count']} CPU cores, {mach['torch_threads']} torch thread(s), load average "
        f"{_num(mach.get('load_average_at_start'), '.2f')} at start; torch {mach['torch']}, {mach['platform']}.",
        "",
    ]
    return lines


def _headline(m: dict[str, Any]) -> list[str]:
    runs = m["runs"]
    rows = [
        "## Results",
        "",
        "| run | understanding exact match (chance, majority) | non-trivial types (chance) "
        "| generation: all right (chance) | kind / colour / position | step time | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        u, g = r.get("understanding"), r.get("generation")
        nt = nontrivial_understanding(u) if u else None
        rows.append(
            f"| {name} | "
            + (
                f"{_pct(u['accuracy'])} ({_pct(u['chance'])}, {_pct(u['majority'])})"
                if u
                else "n/a"
            )
            + " | "
            + (f"{_pct(nt['accuracy'])} ({_pct(nt['chance'])})" if nt else "n/a")
            + " | "
            + (
                f"{_pct(g['accuracy'])} ({_pct(g['chance']['all'])})"
                if g and g.get("per_attribute")
                else "n/a"
            )
            + " | "
            + (
                " / ".join(_pct(g["per_attribute"][a]) for a in ("kind", "color", "position"))
                if g and g.get("per_attribute")
                else "n/a"
            )
            + f" | {_num(r['train'].get('step_time_s'))} s | {_num(r.get('final', {}).get('loss'))} |"
        )
    ac = m.get("above_chance", {})
    rows.append("")
    for name in runs:
        e = ac.get(name, {})
        rows.append(
            f"- `{name}` clearly above chance (margin {_pct(ac.get('margin'), 0)}): understanding "
            f"**{'yes' if e.get('understanding') else 'no'}**, generation **{'yes' if e.get('generation') else 'no'}**."
        )
    rows += [f"- Rule: {ac.get('rule', '')}.", ""]
    return rows


def _per_type(m: dict[str, Any]) -> list[str]:
    runs = m["runs"]
    names = list(runs)
    lines = ["### Understanding by question type", ""]
    lines.append("| type | possible answers | chance | majority | " + " | ".join(names) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(names))
    first = next((r["understanding"] for r in runs.values() if r.get("understanding")), None)
    if first:
        for t, ts in first["per_type"].items():
            cells = []
            for n in names:
                u = runs[n].get("understanding")
                cells.append(
                    _pct(u["per_type"][t]["accuracy"]) if u and t in u["per_type"] else "n/a"
                )
            lines.append(
                f"| {t} | {ts['num_answers']} | {_pct(ts['chance'])} | {_pct(ts['majority'])} | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Chance is 1 / (distinct answers of the type in the evaluated set); majority is always "
        "giving the type's most frequent answer. A question type with one possible answer in the "
        "evaluated set (count, when every image holds one shape) is trivial and left out of the "
        "non-trivial accuracy.",
        "",
        "### Generation by attribute (shapes detector, a small GenEval-like check)",
        "",
        "| attribute | chance | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for a in ("kind", "color", "position", "all"):
        cells, chance = [], None
        for n in names:
            g = runs[n].get("generation")
            if g and g.get("per_attribute"):
                cells.append(_pct(g["per_attribute"][a]))
                chance = g["chance"][a]
            else:
                cells.append("n/a")
        lines.append(f"| {a} | {_pct(chance)} | " + " | ".join(cells) + " |")
    gens = [runs[n].get("generation") or {} for n in names]
    empties = ", ".join(
        f"{n} {g.get('empty_images', 'n/a')}" for n, g in zip(names, gens, strict=True)
    )
    modes = ", ".join(f"{n} {g.get('mode', 'n/a')}" for n, g in zip(names, gens, strict=True))
    lines += [
        "",
        "Each validation caption is drawn greedily over image codes only (text ids masked), decoded "
        "by the VQ tokenizer and checked cell by cell for the requested kind and colour of every "
        f"shape in the caption. Empty images: {empties}. Decoding: a run without reduction uses the KV cache, the "
        f"reduced run decodes without a cache under its own reduction (modes: {modes}).",
        "",
    ]
    return lines


def _cost(m: dict[str, Any]) -> list[str]:
    c = m["comparison"]
    f = c["flops"]
    lines = [
        "## Cost: what the reduction saves",
        "",
        f"Cost model (`tokred_core.cost.plan_cost`) on the plans of the first {f['batches']} real training "
        "micro-batches (their layouts, padding excluded), reduced vs. baseline, forward FLOPs:",
        "",
        "| samples | full count ratio | paper convention ratio |",
        "|---|---|---|",
    ]
    for key in ("mixed", "understanding", "generation"):
        if key in f:
            lines.append(
                f"| {key} | {f[key]['ratio']:.3f}x | {f[key]['paper_convention_ratio']:.3f}x |"
            )
    rt = c.get("step_time_ratio")
    tr = c.get("tokens_per_s_ratio")
    lines += [
        "",
        "Full count: projections, causally visible attention pairs and FFN; INJECT (HiMix image) tokens "
        "pay their K/V projections in every layer. Paper convention: n_q * n_kv * d + 8 * n_q * d^2 per "
        "layer (HiMix = T/(T+M)). Embeddings and the output head are not counted in either, and at this "
        "size they are a large part of the real work.",
        "",
        f"Measured: the reduced run's mean step time is **{_num(rt)}x** the baseline's "
        f"(tokens/s ratio {_num(tr)}x), on this CPU with {m['machine']['torch_threads']} thread(s). "
        "On a tiny model, fixed per-step costs (Python, collation, the output head over the whole "
        "vocabulary, the optimizer) and the gather/scatter of the reduced layers weigh far more than "
        "on a 7B model, so wall-clock savings trail the FLOPs ratio; other processes on a shared "
        "machine add noise to both runs.",
        "",
    ]
    return lines


def _alloc_rows(task: str, digest: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    entry = digest.get(task)
    if not entry:
        return []
    segs = [s for s in entry["segments"] if not (task == "generation" and s == "image")]
    last = len(entry["shares"]) - 1
    rows = [
        f"| segment | layer 0 (this model) | layer 0 (paper) | layer {last} (this model) | last layer (paper) |",
        "|---|---|---|---|---|",
    ]
    for s in segs:
        p_first = paper.get(task, {}).get("first", {}).get(s)
        p_last = paper.get(task, {}).get("last", {}).get(s)
        rows.append(
            f"| {s} | {_pct(entry['first_layer'][s])} | {_pct(None if p_first is None else p_first / 100)} "
            f"| {_pct(entry['last_layer'][s])} | {_pct(None if p_last is None else p_last / 100)} |"
        )
    return rows


def _findings(m: dict[str, Any]) -> list[str]:
    from tokred_train.eval.allocation import PAPER_PIES

    base = m["runs"]["baseline"].get("allocation", {})
    lines = ["## Attention allocation (the paper's Figure 3)", ""]
    u, g = base.get("understanding"), base.get("generation")
    if u:
        seq = ", ".join(_pct(x, 0) for x in u["image_share_per_layer"])
        lines += [
            f"**Understanding (baseline)**: the image segment receives {_pct(u['image_share_first'])} of the "
            f"attention at layer 0, {_pct(u['image_share_middle_mean'])} on average in the middle layers and "
            f"{_pct(u['image_share_last'])} at the last layer (per layer: {seq}). Paper: {_PAPER_UND}.",
            "",
            *_alloc_rows("understanding", base, PAPER_PIES),
            "",
        ]
    if g:
        seq = ", ".join(_pct(x, 0) for x in g["image_share_per_layer"])
        lines += [
            f"**Generation (baseline)**: the output (image) tokens receive {_pct(g['image_share_first'])} at "
            f"layer 0, {_pct(g['image_share_middle_mean'])} in the middle layers and {_pct(g['image_share_last'])} "
            f"at the last layer (per layer: {seq}). Paper: {_PAPER_GEN}.",
            "",
            *_alloc_rows("generation", base, PAPER_PIES),
            "",
        ]
    if u and (u.get("image_share_by_query_segment") or {}).get("instruction"):
        q = u["image_share_by_query_segment"]["instruction"]
        lines += [
            "Seen from the instruction queries alone (the question; its last token predicts the "
            f"answer), the image share is {_pct(q[0])} at layer 0 and {_pct(q[-1])} at the last layer "
            f"(per layer: {', '.join(_pct(x, 0) for x in q)}); the image tokens' own queries make up "
            "much of the all-query share above.",
            "",
        ]
    if u and g:
        und_drop = u["image_share_last"] < u["image_share_first"]
        gen_keep = g["image_share_last"] >= u["image_share_last"]
        verdict = []
        verdict.append(
            "image attention in understanding "
            + (
                "falls from the first to the last layer, as in the paper"
                if und_drop
                else "does not fall from the first to the last layer, unlike the paper"
            )
        )
        verdict.append(
            "generation keeps "
            + ("more" if gen_keep else "less")
            + " attention on image tokens at the last layer than understanding does"
            + (" (the paper's asymmetry)" if gen_keep else " (the paper found the opposite)")
        )
        lines += [
            "**Findings vs. the paper**: "
            + "; ".join(verdict)
            + ". The share of the system segment "
            f"(a likely attention sink in the paper) is {_pct(u['first_layer'].get('system'))} -> "
            f"{_pct(u['last_layer'].get('system'))} for understanding here. A {len(u['shares'])}-layer model "
            "trained for minutes on synthetic images is not VILA-U 7B: read the direction of the trends, "
            "not the percentages. The generation segment shares are over *all* queries of the sequence, "
            "as in the paper's Eq. 2.",
            "",
        ]
    red = m["runs"].get("reduced", {}).get("allocation", {})
    ru = red.get("understanding")
    if ru:
        lines += [
            f"Under HiMix the image tokens are no longer queries, so in the reduced run's probe only text "
            f"queries count: the image share is {_pct(ru['image_share_first'])} at layer 0 and "
            f"{_pct(ru['image_share_last'])} at the last layer (text queries looking at the injected image "
            "keys/values).",
            "",
        ]
    return lines


def _files(m: dict[str, Any]) -> list[str]:
    f = m.get("files", {})
    lines = ["## Files", ""]
    for key, label in (
        ("allocation_baseline_bars", "baseline allocation per layer, both tasks"),
        ("allocation_baseline_pies", "baseline first/last layer pies, with the paper's"),
        ("allocation_reduced_bars", "reduced run allocation per layer"),
        ("allocation_reduced_pies", "reduced run pies"),
        ("image_share", "image-token share per layer, both runs"),
        ("samples_baseline", "generated samples, baseline (green frame: detector check passed)"),
        ("samples_reduced", "generated samples, reduced run"),
    ):
        if key in f:
            lines.append(f"- [{label}]({f[key]})")
    lines += [
        "- `metrics.json`: every number on this page (and the loss curves); `allocation/*/allocation.json`: "
        "shares per layer per segment per task, and by query segment.",
        "- `runs/baseline`, `runs/reduced`: the run folders (config, checkpoints, metrics.jsonl, eval/): "
        "`tokred eval runs/baseline` and `tokred analyze runs/baseline` read them again.",
        "",
    ]
    for key in (
        "allocation_baseline_bars",
        "allocation_baseline_pies",
        "samples_baseline",
        "samples_reduced",
    ):
        if key in f:
            lines.append(f"![{key}]({f[key]})")
    lines.append("")
    return lines


def render_report(m: dict[str, Any]) -> str:
    """The markdown report of a demo run."""
    head = [
        "# tokred demo report",
        "",
        f"The embedded default end to end in **{m['wall_time_s']:.0f} s** wall time "
        f"(of which {_num(m.get('startup_time_s'), '.0f')} s starting Python and importing): data, VQ "
        "tokenizer and vocabulary built once, the tiny unified model trained without reduction and with "
        "HiMix + HMGen, both evaluated and probed.",
        "",
        "Caveat: validation scenes (which kinds and colours sit in which cells) never occur in "
        "training, so the accuracies measure generalisation to unseen combinations of seen "
        "attributes, after minutes of CPU time and from one seed: a gap of a few points between "
        "the runs is within training noise.",
        "",
    ]
    return "\n".join(
        head + _setup(m) + _headline(m) + _per_type(m) + _cost(m) + _findings(m) + _files(m)
    )


def render_summary(m: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"tokred demo: {m['wall_time_s']:.0f}s wall time"]
    for name, r in m["runs"].items():
        u, g = r.get("understanding") or {}, r.get("generation") or {}
        nt = nontrivial_understanding(u) if u else None
        lines.append(
            f"  {name:<9} understanding {_pct(u.get('accuracy'))} (chance {_pct(u.get('chance'))}; "
            f"non-trivial {_pct(nt['accuracy'] if nt else None)} vs {_pct(nt['chance'] if nt else None)})  "
            f"generation {_pct(g.get('accuracy'))} (chance {_pct((g.get('chance') or {}).get('all'))})  "
            f"step {_num(r['train'].get('step_time_s'))}s"
        )
    c = m["comparison"]
    lines.append(
        f"  FLOPs ratio {c['flops']['mixed']['ratio']:.3f}x (paper convention "
        f"{c['flops']['mixed']['paper_convention_ratio']:.3f}x), step-time ratio {_num(c.get('step_time_ratio'))}x"
    )
    lines.append("  report: " + m.get("files", {}).get("report", "report.md"))
    return "\n".join(lines)

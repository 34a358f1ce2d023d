"""`tokred bench`'s result as text: the header (shape, machine, settings), one table row
per case and arm, the probe's cost, the efficiency sweep, and the conventions."""

from __future__ import annotations

from .arms import ARM_NAMES
from .results import ArmResult, BenchResult, CaseResult

__all__ = ["render_table", "efficiency_series"]


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _header(result: BenchResult) -> list[str]:
    s, m, st = result.shape, result.machine, result.settings
    heads = f"{s['num_heads']}/{s['num_kv_heads']} heads"
    start, end = m.get("load_average_start"), m.get("load_average_end")
    load_text = ""
    if start and end:
        load_text = f"; load average {start[0]:.2f} at the start, {end[0]:.2f} at the end"
    return [
        f"# tokred bench, shape {s['name']}: hidden {s['hidden_size']}, ffn "
        f"{s['intermediate_size']}, {s['num_layers']} layers, {heads}, vocab {s['vocab_size']}; "
        f"T={s['text_tokens']} text + M={s['image_tokens']} image tokens per sample",
        f"# {m['device_name']} ({m['device']}), {st['dtype']}, torch threads {m['torch_threads']}, "
        f"torch {m['torch']}; median of {st['repeats']} after {st['warmup']} "
        f"warm-up, arms interleaved{load_text}",
    ]


def _row(case: CaseResult, arm: ArmResult, first: bool) -> str:
    t = arm.time
    batch = f"{case.batch} x{case.samples}" if first else ""
    policy = case.policy if first else ""
    plan = _num(case.flops_ratio) if first else ""
    step = _num(case.step_flops_ratio) if first else ""
    return (
        f"| {batch} | {policy} | {arm.arm} | {t.median:.3f} [{t.q1:.3f}-{t.q3:.3f}] | "
        f"{arm.time_ratio.median:.2f} | {plan} | {step} | {arm.arm_flops_ratio:.2f} | "
        f"{_num(arm.efficiency)} | {_num(arm.memory_ratio)} | {arm.tokens_per_s:,.0f} |"
    )


def _sweep_rows(result: BenchResult) -> list[str]:
    points = [(c.seq_len, c) for c in result.cases]
    points += [(p.seq_len, c) for p in result.sweep for c in p.cases]
    lines = [
        "",
        "Efficiency against tokens per sample (T + M; T fixed, M swept):",
        "",
        "| tokens/sample | policy | plan FLOPs | step FLOPs | " + " | ".join(ARM_NAMES) + " |",
        "|---|---|---|---|" + "---|" * len(ARM_NAMES),
    ]
    for seq_len, case in sorted(points, key=lambda p: (p[1].policy, p[0])):
        effs = " | ".join(_num(case.arm(name).efficiency) for name in ARM_NAMES)
        flops = f"{_num(case.flops_ratio)} | {_num(case.step_flops_ratio)}"
        lines.append(f"| {seq_len} | {case.policy} | {flops} | {effs} |")
    return lines


def render_table(result: BenchResult) -> str:
    lines = _header(result)
    lines += [
        "",
        "| batch | policy | arm | median s [IQR] | time ratio | plan FLOPs | step FLOPs | "
        "arm FLOPs | efficiency | memory ratio | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in result.cases:
        for i, arm in enumerate([case.none, *case.arms]):
            lines.append(_row(case, arm, first=i == 0))
    if result.probe is not None:
        p = result.probe
        lines += [
            "",
            f"Attention-allocation probe ({p.batch} batch, forward only): "
            f"{p.ratio.median:.2f}x the plain forward [IQR {p.ratio.q1:.2f}-{p.ratio.q3:.2f}] "
            f"({p.probe.median:.3f} s against {p.plain.median:.3f} s)",
        ]
    if result.sweep:
        lines += _sweep_rows(result)
    lines += ["", f"memory: {result.settings['memory']}"]
    lines += [f"{note}" for note in result.notes]
    return "\n".join(lines)


def efficiency_series(result: BenchResult) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{policy: {arm: [(tokens per sample, efficiency)]}} over the shape's own length and
    the sweep, sorted by length; points without an efficiency are left out."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    cases = [*result.cases, *(c for p in result.sweep for c in p.cases)]
    for case in cases:
        for name in ARM_NAMES:
            eff = case.arm(name).efficiency
            if eff is not None:
                out.setdefault(case.policy, {}).setdefault(name, []).append((case.seq_len, eff))
    for arms in out.values():
        for points in arms.values():
            points.sort()
    return out

"""What `tokred flops` computes and prints: analytic FLOPs of a policy against no
reduction on one canonical sample (the cost model of tokred_core), as a JSON-ready dict
and as a table. The sample has T text and M image tokens laid out by
`tokred_core.canonical_spans`; the conventions (what is counted, causal pairs, training =
3x forward, the paper's asymptotic convention) are printed with the result so a number is
never read without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokred_core import (
    CostReport,
    Policy,
    Task,
    TokredError,
    build_policy,
    canonical_layout,
    canonical_spans,
    load_shape,
    parse_task,
    policy_cost,
    split_policy_spec,
)

__all__ = ["flops_result", "natural_task", "parse_overrides", "render_table"]

# The task each policy was designed for; the rest default to understanding.
_NATURAL = {"hmgen": Task.GENERATION}


def parse_overrides(items: list[str]) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; values are coerced by the policy's config."""
    fields: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TokredError(f"--set {item!r} must be KEY=VALUE, e.g. --set num_shallow=5")
        if key in fields:
            raise TokredError(f"--set {key} is given twice ({fields[key]!r} and {value!r})")
        fields[key] = value.strip()
    return fields


def natural_task(policy: Policy) -> Task:
    """The task a policy accelerates when --task is not given."""
    if len(policy.tasks) == 1:
        return next(iter(policy.tasks))
    return _NATURAL.get(policy.name, Task.UNDERSTANDING)


def _check_tokens(name: str, value: int) -> None:
    if value < 1:
        raise TokredError(f"{name}={value} must be a positive number of tokens")


def flops_result(
    config: str,
    policy: str,
    overrides: list[str],
    text_tokens: int,
    image_tokens: int,
    task: str | None = None,
    causal: str = "exact",
) -> dict[str, Any]:
    """Everything `tokred flops` reports, as a JSON-ready dict: `policy` (a name, its
    fields as `--set` items in `overrides`) against none on one canonical sample of
    `text_tokens` + `image_tokens` on the decoder `config` (a preset or a config.json)."""
    _check_tokens("--text-tokens", text_tokens)
    _check_tokens("--image-tokens", image_tokens)
    shape = load_shape(config)
    # --policy NAME[:key=value...] reads as everywhere else (tokred_core.policies.spec).
    name, inline = split_policy_spec(policy, "--policy")
    fields = parse_overrides(overrides)
    twice = sorted(set(inline) & set(fields))
    if twice:
        key = twice[0]
        raise TokredError(f"--policy and --set both give {key} ({inline[key]!r}, {fields[key]!r})")
    built = build_policy(name, **inline, **fields)
    the_task = parse_task(task) if task else natural_task(built)
    layout = canonical_layout(the_task, text_tokens, image_tokens)
    baseline = policy_cost("none", shape, layout, causal)
    cost = policy_cost(built, shape, layout, causal)
    return {
        "config": {"name": config, **shape.to_dict()},
        "policy": built.name,
        "policy_config": dataclasses.asdict(built.config),
        "task": the_task.name.lower(),
        "text_tokens": text_tokens,
        "image_tokens": image_tokens,
        "layout": [
            [seg.name.lower(), n] for seg, n in canonical_spans(the_task, text_tokens, image_tokens)
        ],
        "causal": causal,
        "baseline_flops": baseline.forward_flops,
        "policy_flops": cost.forward_flops,
        "ratio": cost.ratio_to(baseline),
        "paper_convention_ratio": cost.paper_ratio_to(baseline),
        "training_flops_factor": cost.training_flops_factor,
        "baseline_training_flops": baseline.training_flops,
        "policy_training_flops": cost.training_flops,
        "components": cost.components(),
        "baseline_components": baseline.components(),
        "per_layer": _per_layer(cost, baseline),
        "notes": list(cost.notes),
    }


def _per_layer(cost: CostReport, baseline: CostReport) -> list[dict[str, Any]]:
    rows = []
    for mine, base in zip(cost.layers, baseline.layers, strict=True):
        row: dict[str, Any] = mine.to_dict()
        row["baseline_flops"] = base.flops
        row["baseline_paper_units"] = base.paper_units
        row["ratio"] = mine.flops / base.flops
        rows.append(row)
    return rows


def _unit(value: int) -> tuple[float, str]:
    for scale, name in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if value >= scale:
            return scale, name
    return 1.0, "FLOP"


def render_table(r: dict[str, Any]) -> str:
    """The table `tokred flops` prints for a `flops_result`."""
    c = r["config"]
    scale, unit = _unit(max(row["baseline_flops"] for row in r["per_layer"]))
    settings = ", ".join(f"{k}={v}" for k, v in r["policy_config"].items()) or "no settings"
    lines = [
        f"policy {r['policy']} ({settings}) vs none on {c['name']}: d={c['hidden_size']}, "
        f"ffn={c['intermediate_size']}{' gated' if c['gated_ffn'] else ''}, layers={c['num_layers']}, "
        f"heads={c['num_heads']}, kv_heads={c['num_kv_heads']}, head_dim={c['head_dim']}",
        f"task {r['task']}, one sample of T={r['text_tokens']} text + M={r['image_tokens']} image tokens: "
        + " | ".join(f"{seg} {n}" for seg, n in r["layout"]),
        f"attention pairs: {r['causal']}; FLOPs per layer in {unit}",
        "",
    ]
    head = "layer queries kv q+o_proj kv_proj attention ffn total baseline ratio".split()
    lines.append("".join(f"{h:>11}" for h in head))
    for row in r["per_layer"]:
        cells = [
            row["layer"],
            row["queries"],
            row["kv_tokens"],
            *(
                f"{v / scale:.3f}"
                for v in (
                    row["q_proj"] + row["o_proj"],
                    row["kv_proj"],
                    row["attention"],
                    row["ffn"],
                )
            ),
            f"{row['flops'] / scale:.3f}",
            f"{row['baseline_flops'] / scale:.3f}",
            f"{row['ratio']:.4f}",
        ]
        lines.append("".join(f"{v!s:>11}" for v in cells))
    f = r["training_flops_factor"]
    lines += [
        "",
        f"forward FLOPs:  {r['policy_flops']:.4e} (policy)  {r['baseline_flops']:.4e} (none)",
        f"training FLOPs: {r['policy_training_flops']:.4e} (policy)  "
        f"{r['baseline_training_flops']:.4e} (none)  [{f} x forward]",
        f"ratio (full count):        {r['ratio']:.4f}",
        f"ratio (paper convention):  {r['paper_convention_ratio']:.4f}{_formula_hint(r)}",
        "notes:",
        *(f"  - {n}" for n in r["notes"]),
    ]
    return "\n".join(lines)


def _formula_hint(r: dict[str, Any]) -> str:
    # The closed form the paper states for HiMix; the other policies have none this simple.
    if r["policy"] != "himix" or r["policy_config"].get("start_layer"):
        return ""
    t, m = r["text_tokens"], r["image_tokens"]
    return f"   [HiMix: T/(T+M) = {t / (t + m):.4f}]"

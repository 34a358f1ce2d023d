"""Forward+backward wall-clock of reduction policies against `none`, beside the cost model.

Not a test: timings depend on the machine, so they are measured here and written down
(with the machine and this command) in the package README.

    uv run --frozen python packages/tokred-models/benchmarks/bench_reduction.py \
        --hidden 1024 --layers 4 --text-tokens 64 --image-tokens 576 --batch 2

Each case builds a batch of one task (understanding for himix, generation for hmgen, both
for the joint case), times `repeats` forward+backward passes after `warmup` ones, and
prints the median, its ratio to `none` on the same batch, and the cost model's training
FLOPs ratio (exact causal count) for the same plan.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from tokred_core import TaskPolicies, TokenLayout, build_policy
from tokred_core.cost import canonical_spans, plan_cost
from tokred_models import apply_reduction
from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model
from transformers import LlamaForCausalLM

#: The model's flags: each sets a field of the embedded tiny model's config (default).
MODEL_FLAGS = {
    "hidden": ("hidden_size", 1024),
    "ffn": ("intermediate_size", 2816),
    "layers": ("num_layers", 4),
    "heads": ("num_heads", 16),
    "kv_heads": ("num_kv_heads", 16),
    "vocab": ("vocab_size", 2048),
}


def tiny_config(args) -> TinyUnifiedConfig:
    """The benchmarked decoder: the embedded tiny model's Llama at the flags' sizes."""
    sizes = {field: getattr(args, flag) for flag, (field, _) in MODEL_FLAGS.items()}
    # Unseeded here: build_model seeds, so the batches drawn after it follow from seed 0 too.
    return TinyUnifiedConfig(**sizes, max_positions=4096, seed=None)


def build_model(config: TinyUnifiedConfig) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return build_tiny_unified_model(config).train()


def layout_for(tasks: list[str], args) -> TokenLayout:
    spans = [canonical_spans(t, args.text_tokens, args.image_tokens) for t in tasks]
    return TokenLayout.from_spans(spans, tasks)


def time_step(model, ids, layout, labels, args, reduced: bool) -> list[float]:
    kwargs = {"tokred_layout": layout} if reduced else {}
    times = []
    for i in range(args.warmup + args.repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = model(ids, attention_mask=layout.valid_mask().long(), labels=labels, **kwargs)
        out.loss.backward()
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, (_, default) in MODEL_FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), type=int, default=default)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--hmgen-shallow", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = tiny_config(args)
    model = build_model(config)
    shape = config.decoder_shape()
    hmgen = build_policy("hmgen", num_shallow=args.hmgen_shallow)
    cases = [
        ("understanding", "himix", ["understanding"] * args.batch, {"understanding": "himix"}),
        ("generation", "hmgen", ["generation"] * args.batch, {"generation": hmgen}),
        (
            "mixed",
            "himix+hmgen",
            ["understanding", "generation"] * (args.batch // 2 or 1),
            {"understanding": "himix", "generation": hmgen},
        ),
    ]
    rows = []
    for task, name, tasks, policies in cases:
        layout = layout_for(tasks, args)
        ids = torch.randint(0, args.vocab, layout.segments.shape)
        labels = torch.where(layout.target_mask(), ids, torch.full_like(ids, -100))
        base = statistics.median(time_step(model, ids, layout, labels, args, reduced=False))
        results = {}
        for label, pol in (("none", None), (name, policies)):
            handle = apply_reduction(model, TaskPolicies(pol) if pol else "none", "shared")
            results[label] = statistics.median(
                time_step(model, ids, layout, labels, args, reduced=True)
            )
            plan = handle.plan(layout)
            results[label + "_flops"] = plan_cost(plan, shape).training_flops
            handle.undo()
        rows.append(
            {
                "batch": task,
                "policy": name,
                "unpatched_s": base,
                "none_s": results["none"],
                "policy_s": results[name],
                "measured_ratio": results[name] / results["none"],
                "flops_ratio": results[name + "_flops"] / results["none_flops"],
            }
        )
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "shape": vars(args),
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"# {meta['machine']}; torch {meta['torch']}")
    print(
        f"# hidden {args.hidden}, ffn {args.ffn}, layers {args.layers}, heads {args.heads}/{args.kv_heads}, "
        f"T={args.text_tokens}, M={args.image_tokens}, batch {args.batch}, median of {args.repeats}"
    )
    print("| batch | policy | unpatched s | none s | policy s | measured ratio | FLOPs ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['policy']} | {r['unpatched_s']:.3f} | {r['none_s']:.3f} | "
            f"{r['policy_s']:.3f} | {r['measured_ratio']:.2f} | {r['flops_ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()

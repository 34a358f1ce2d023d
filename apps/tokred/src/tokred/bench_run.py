"""The work of `tokred bench`: resolve and check the arguments, time the arms
(`tokred_models.bench`), and write bench.json and bench.png.

Every argument is checked before a model is built, and nothing is written until all is
measured and drawn: then each file goes to a temporary name beside it and is renamed into
place, so a failure at any point leaves no file half written.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tokred_core import TokredError
from tokred_models.bench import (
    ARM_NAMES,
    DEFAULT_POLICIES,
    BenchResult,
    check_device,
    efficiency_series,
    load_bench_shape,
    parse_cases,
    render_table,
    run_bench,
)
from tokred_train.atomic import atomic_write, atomic_write_text

__all__ = [
    "BenchRequest",
    "DEFAULT_SHAPES",
    "bench",
    "parse_seq_lens",
    "plot_efficiency",
    "run_command",
    "write_bench",
]

#: The shape timed when --shape is not given: the demo's tiny model on the CPU (the
#: default run must finish within 5 minutes on a 2-core CPU), LLaMA-3.2-1B's on a GPU.
DEFAULT_SHAPES = {"cpu": "demo", "cuda": "llama-1b"}
FILES = ("bench.json", "bench.png")
#: The longest sample the sweep takes (as the shapes allow): a dense (N x N) mask per
#: sample is built for the masking arm, so a typo like 1e6 would only exhaust memory.
MAX_SEQ_LEN = 65_536


@dataclass(frozen=True)
class BenchRequest:
    """The command line, as parsed (None: the default)."""

    shape: str | None
    policies: str | None
    batch: int | None
    device: str
    warmup: int
    repeats: int
    seq_lens: tuple[int, ...] | None
    threads: int
    probe: bool = True


def parse_seq_lens(text: str | None) -> tuple[int, ...] | None:
    """'97,193' -> (97, 193); '' -> () (no sweep); None -> None (the shape's sweep)."""
    if text is None:
        return None
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise TokredError(
                f"--seq-lens {text!r}: {part!r} is not an integer (expected e.g. 97,193)"
            ) from None
        if not 1 <= value <= MAX_SEQ_LEN:
            raise TokredError(f"--seq-lens {value}: must be in 1..{MAX_SEQ_LEN}")
        values.append(value)
    return tuple(values)


def _command(req: BenchRequest, shape: str, policies: str, seq_lens: tuple[int, ...]) -> list[str]:
    """The command line that repeats this run, every default spelled out."""
    cmd = ["tokred", "bench", "--shape", shape, "--policies", policies, "--device", req.device]
    if req.batch is not None:
        cmd += ["--batch", str(req.batch)]
    cmd += ["--warmup", str(req.warmup), "--repeats", str(req.repeats)]
    cmd += ["--seq-lens", ",".join(map(str, seq_lens))]
    return cmd + (["--threads", str(req.threads)] if req.threads else [])


def bench(req: BenchRequest, log=None) -> BenchResult:
    """Check the request (one-line errors naming the bad value), then measure."""
    check_device(req.device)
    shape_spec = req.shape or DEFAULT_SHAPES[req.device]
    shape = load_bench_shape(shape_spec)
    if req.batch is not None:
        shape = shape.replace(batch=req.batch)
    policies = req.policies or DEFAULT_POLICIES
    cases = parse_cases(policies, shape)
    seq_lens = shape.seq_lens if req.seq_lens is None else req.seq_lens
    for n in seq_lens:
        if n <= shape.text_tokens:
            raise TokredError(
                f"--seq-lens {n}: must exceed the shape's {shape.text_tokens} text tokens per "
                "sample (the rest of each sample is image tokens)"
            )
    # The shape's own length is measured anyway; the sweep adds the others.
    sweep = tuple(sorted({n for n in seq_lens if n != shape.seq_len}))
    if req.threads:
        torch.set_num_threads(req.threads)
    return run_bench(
        shape,
        cases,
        device=req.device,
        warmup=req.warmup,
        repeats=req.repeats,
        seq_lens=sweep,
        probe=req.probe,
        command=_command(req, shape_spec, policies, sweep),
        log=log,
    )


def plot_efficiency(result: BenchResult) -> bytes:
    """PNG bytes: efficiency against tokens per sample, one panel per policy, one line per
    arm, with 1 (time falls as the FLOPs do) and 0 (no time saved) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = efficiency_series(result)
    policies = [c.policy for c in result.cases if c.policy in series]
    cols = max(1, min(2, len(policies)))
    rows = max(1, -(-len(policies) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for ax, policy in zip(axes.flat, policies, strict=False):
        for arm in ARM_NAMES:
            points = series[policy].get(arm, [])
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=arm)
        ax.axhline(1.0, color="#888", lw=0.8, ls="--")
        ax.axhline(0.0, color="#888", lw=0.8)
        ax.set_title(policy)
        ax.set_xlabel("tokens per sample (T + M)")
        ax.set_ylabel("efficiency")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(policies) :]:
        ax.axis("off")
    m, s = result.machine, result.shape
    fig.suptitle(
        f"(1 - time ratio) / (1 - FLOPs ratio), shape {s['name']}, {m['device_name']} "
        f"({result.settings['dtype']}, {m['torch_threads']} threads)",
        fontsize=10,
    )
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()


def write_bench(result: BenchResult, out: Path) -> dict[str, Path]:
    """bench.json and bench.png in `out`, each written whole or not at all."""
    text = json.dumps(result.to_dict(), indent=1) + "\n"
    png = plot_efficiency(result)  # drawn before anything is written
    paths = {name: out / name for name in FILES}

    def write_png(tmp: str) -> None:
        Path(tmp).write_bytes(png)

    atomic_write_text(paths["bench.json"], text)
    atomic_write(paths["bench.png"], write_png)
    return paths


def run_command(req: BenchRequest, out: Path, as_json: bool) -> int:
    """Measure, write the files, print the table (or the JSON); progress on stderr."""
    result = bench(req, log=lambda line: print(f"tokred bench: {line}", file=sys.stderr))
    paths = write_bench(result, out)
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(render_table(result))
        print(f"\nwrote {paths['bench.json']} and {paths['bench.png']}")
    return 0

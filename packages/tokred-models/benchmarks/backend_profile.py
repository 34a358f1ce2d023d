"""Where a reduced step's time goes, per attention backend: wall time against `none`, then
one profiled step per backend (device time and host time per operation).

    python packages/tokred-models/benchmarks/backend_profile.py OUT_DIR \
        [--shape llama-1b] [--device cuda] [--policies himix,himix+hmgen]

For each policy, `none` (the plain model) and tokred's step are timed (median of 5 after
2 warm-ups), tokred once under each TOKRED_KERNELS_IMPL in --impls (the dispatcher reads
it at every call; a name other than auto applies to every op, so `flex` alone cannot run
the gathers), and one step of each is profiled with torch.profiler. Prints the
tables and writes them to OUT_DIR/backend_profile.txt. `tokred bench` gives the
interleaved ratios; this says why a ratio is what it is: on the H200 of
docs/gpu-check-h200.md, the GPU was busy 23-32 ms of a 120-178 ms HiMix step, whose host
time went into issuing kernels.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from tokred_models.bench.arms import make_batch, open_arm, plain_step
from tokred_models.bench.cases import case_tasks, parse_cases
from tokred_models.bench.shapes import load_bench_shape
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", default="llama-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policies", default="himix,himix+hmgen")
    parser.add_argument("--impls", default="auto,torch")
    parser.add_argument("--rows", type=int, default=18, help="operations per profile table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "backend_profile.txt", "w", encoding="utf-8") as log:

        def say(text: str) -> None:
            print(text, flush=True)
            log.write(text + "\n")

        _profile(args, say)


def _profile(args: argparse.Namespace, say) -> None:
    shape = load_bench_shape(args.shape)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    with torch.device(device):  # initialised on the device: a 1B model builds in seconds
        plain = shape.build_model().to(dtype=torch.bfloat16 if on_cuda else torch.float32)
    patched = copy.deepcopy(plain)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    sort = "self_device_time_total" if on_cuda else "self_cpu_time_total"

    def timed(step, batch, repeats: int = 5, warmup: int = 2) -> float:
        times = []
        for _ in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            step(batch)
            sync()
            times.append(time.perf_counter() - start)
            for model in (plain, patched):
                model.zero_grad(set_to_none=True)
        return statistics.median(times[warmup:])

    none = plain_step(plain)
    for case in parse_cases(args.policies, shape):
        tasks = case_tasks(case.batch, shape.batch)
        batch = make_batch(tasks, shape.text_tokens, shape.image_tokens, shape.vocab_size, device)
        base = timed(none, batch)
        with open_arm("tokred", patched, case.policies) as step:
            for impl in args.impls.split(","):
                os.environ["TOKRED_KERNELS_IMPL"] = impl
                try:
                    t = timed(step, batch)
                except Exception as exc:  # a backend that cannot run here says why
                    say(f"{case.name} {case.batch} [{impl}]: failed: {exc!r}"[:300])
                    continue
                say(
                    f"{case.name} {case.batch}: none {base * 1e3:.1f} ms, tokred[{impl}] "
                    f"{t * 1e3:.1f} ms ({t / base:.2f}x)"
                )
                step(batch)
                sync()
                with profile(activities=activities) as prof:
                    step(batch)
                    sync()
                table = prof.key_averages().table(
                    sort_by=sort, row_limit=args.rows, max_name_column_width=60
                )
                say(f"--- {case.name} [{impl}], by {sort}\n{table}")
        os.environ.pop("TOKRED_KERNELS_IMPL", None)


if __name__ == "__main__":
    main()

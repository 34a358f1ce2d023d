"""Timing the arms of `arms.py` on each case, interleaved, beside the cost model.

For each case one batch is built and `none` and every arm run forward + backward on it
in turn (none, tokred, masking-only, renumbered-gather, none, ...), `warmup` rounds
untimed, then `repeats` timed rounds. Interleaving puts every arm under the same machine
load, which matters on a shared machine; each arm's time ratio is taken per round.

Memory is measured on one extra untimed step per arm: on CUDA the peak allocated during
the step above what was allocated before it (weights, optimizer-free); on the CPU, where
no allocator statistics exist, the bytes of the tensors autograd saves for the backward
(unique storages, parameters excluded): the activations a step holds at its peak, a proxy
that leaves out temporaries.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from tokred_core import ReductionPlan, Role, TaskPolicies, TokredError, plan_cost
from tokred_core.cost import TRAINING_FLOPS_FACTOR
from torch import nn

from ..probe import AttentionProbe
from .arms import ARM_NAMES, ArmStep, BenchBatch, make_batch, open_arm, plain_step, static_plan
from .cases import BenchCase, case_tasks
from .results import ArmResult, BenchResult, CaseResult, ProbeResult, Spread, SweepPoint
from .shapes import BenchShape

__all__ = [
    "MEMORY_MEASURES",
    "check_device",
    "efficiency",
    "head_training_flops",
    "machine_info",
    "measure_case",
    "measure_probe",
    "run_bench",
]

MEMORY_MEASURES = {
    "cuda": "peak CUDA memory allocated during the step, above the memory allocated before it",
    "cpu": "autograd saved-tensor bytes (unique storages, parameters excluded; "
    "torch.autograd.graph.saved_tensors_hooks): a proxy for activation memory",
}
Log = Callable[[str], None]


def head_training_flops(batch: BenchBatch, shape: BenchShape) -> int:
    """Training FLOPs of the LM head, which every arm computes at every position of the
    padded batch (the model's own logits) and the cost model does not price."""
    positions = batch.layout.batch_size * batch.layout.seq_len
    return TRAINING_FLOPS_FACTOR * 2 * positions * shape.hidden_size * shape.vocab_size


def efficiency(time_ratio: float, flops_ratio: float) -> float | None:
    """(1 - time ratio) / (1 - FLOPs ratio): 1 when time falls as the FLOPs do, 0 when it
    does not fall, negative when it rises; None when the plan saves no FLOPs."""
    if abs(1.0 - flops_ratio) < 1e-12:
        return None
    return (1.0 - time_ratio) / (1.0 - flops_ratio)


def _cpu_name() -> str:
    # platform.processor() is often just the architecture on Linux; cpuinfo names the chip.
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from; the load average (others' work on a shared machine
    shows there) is taken now and again when the run ends."""
    cuda = device.type == "cuda"
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "load_average_start": _load(),
    }


def _arm_flops_ratio(arm: str, plan: ReductionPlan, base: int, shape: BenchShape) -> float:
    if arm == "masking-only":
        return 1.0  # every token is computed; the mask only hides keys
    if arm == "renumbered-gather":
        # It runs ACTIVE tokens only: an INJECT token is neither query nor key there.
        roles = plan.roles.masked_fill(plan.roles == Role.INJECT, int(Role.BYPASS))
        plan = ReductionPlan(roles)
    return plan_cost(plan, shape.decoder_shape()).training_flops / base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: ArmStep, batch: BenchBatch, zero: Callable[[], None], device) -> tuple:
    zero()
    _sync(device)
    start = time.perf_counter()
    loss = step(batch)
    _sync(device)
    return time.perf_counter() - start, loss


def _step_memory(step: ArmStep, batch: BenchBatch, models: list[nn.Module], device) -> int:
    for model in models:
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(batch)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    params = {p.untyped_storage().data_ptr() for m in models for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. a tensor without storage
            return tensor
        if storage.data_ptr() not in params:
            saved.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(batch)
    return sum(saved.values())


def _interleave(steps: dict[str, ArmStep], batch, models, device, warmup: int, repeats: int):
    def zero() -> None:
        for model in models:
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        for step in steps.values():
            _timed(step, batch, zero, device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, step in steps.items():
            elapsed, losses[name] = _timed(step, batch, zero, device)
            times[name].append(elapsed)
    memory = {name: _step_memory(step, batch, models, device) for name, step in steps.items()}
    zero()
    return times, {k: float(v) for k, v in losses.items()}, memory


def measure_case(
    case: BenchCase,
    shape: BenchShape,
    plain: nn.Module,
    patched: nn.Module,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> CaseResult:
    """Time `none` and every arm on the case's batch; `patched` is a copy of `plain` that
    tokred may patch (the other arms run the plain model unchanged)."""
    tasks = case_tasks(case.batch, shape.batch)
    batch = make_batch(tasks, shape.text_tokens, shape.image_tokens, shape.vocab_size, device)
    decoder = shape.decoder_shape()
    base = plan_cost(TaskPolicies().plan(batch.layout, shape.num_layers), decoder).training_flops
    plan = static_plan(case.policies, batch.layout, shape.num_layers)
    plan_flops = plan_cost(plan, decoder).training_flops
    flops_ratio = plan_flops / base
    # What the timed step computes: the decoder (the plan's) and the LM head (the same in
    # every arm). Efficiency is taken against it, so that 1.0 is the limit: against the
    # decoder alone, a time ratio cannot reach the FLOPs ratio while the head still runs.
    head = head_training_flops(batch, shape)
    step_flops_ratio = (plan_flops + head) / (base + head)
    with ExitStack() as stack:
        steps = {"none": plain_step(plain)}
        for arm in ARM_NAMES:
            model = patched if arm == "tokred" else plain
            steps[arm] = stack.enter_context(open_arm(arm, model, case.policies))
        times, losses, memory = _interleave(steps, batch, [plain, patched], device, warmup, repeats)
    results = {}
    for name in steps:
        ratios = [t / n for t, n in zip(times[name], times["none"], strict=True)]
        time_ratio = Spread.of(ratios)
        arm_flops = 1.0 if name == "none" else _arm_flops_ratio(name, plan, base, shape)
        spread = Spread.of(times[name])
        results[name] = ArmResult(
            arm=name,
            time=spread,
            time_ratio=time_ratio,
            arm_flops_ratio=arm_flops,
            efficiency=None if name == "none" else efficiency(time_ratio.median, step_flops_ratio),
            memory=memory[name],
            memory_ratio=memory[name] / memory["none"] if memory["none"] else None,
            tokens_per_s=batch.tokens / spread.median,
            loss=losses[name],
        )
    return CaseResult(
        policy=case.name,
        batch=case.batch,
        samples=len(tasks),
        tokens=batch.tokens,
        text_tokens=shape.text_tokens,
        image_tokens=shape.image_tokens,
        flops_ratio=flops_ratio,
        none=results.pop("none"),
        arms=list(results.values()),
        step_flops_ratio=step_flops_ratio,
    )


def measure_probe(
    shape: BenchShape, plain: nn.Module, probed: nn.Module, device, warmup: int, repeats: int
) -> ProbeResult:
    """Forward of `probed` (unpatched: the probe patches it with `none`) with the probe on,
    against the plain model's forward, interleaved, on the mixed batch."""
    tasks = case_tasks("mixed", shape.batch)
    batch = make_batch(tasks, shape.text_tokens, shape.image_tokens, shape.vocab_size, device)
    mask = batch.attention_mask
    steps = {
        "plain": lambda b: plain(b.ids, attention_mask=mask).logits,
        "probe": lambda b: probed(b.ids, attention_mask=mask, tokred_layout=b.layout).logits,
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    with torch.no_grad(), AttentionProbe(probed) as probe:
        for i in range(warmup + repeats):
            for name, step in steps.items():
                elapsed, _ = _timed(step, batch, lambda: None, device)
                if i >= warmup:
                    times[name].append(elapsed)
        probe.result()  # raises if the probe saw nothing: then the ratio would be a lie
    ratios = [p / n for p, n in zip(times["probe"], times["plain"], strict=True)]
    return ProbeResult(
        "mixed", Spread.of(times["plain"]), Spread.of(times["probe"]), Spread.of(ratios)
    )


def check_device(device: str | torch.device) -> torch.device:
    """The device, or a one-line error: only cpu and cuda, and cuda only where it exists."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TokredError(f"--device {str(device)!r}: expected cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise TokredError(f"--device {str(device)!r}: expected cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
        raise TokredError(
            f"--device cuda: CUDA is not available (torch {torch.__version__}, {built}, "
            "no GPU visible); use --device cpu"
        )
    return dev


def run_bench(
    shape: BenchShape,
    cases: list[BenchCase],
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    seq_lens: tuple[int, ...] | None = None,
    probe: bool = True,
    command: list[str] | None = None,
    log: Log | None = None,
) -> BenchResult:
    """Every case at the shape's own length, the probe's cost, then every case again at
    each of `seq_lens` (default: the shape's) tokens per sample for the sweep."""
    dev = check_device(device)
    machine = machine_info(dev)
    sweep_shapes = [shape.at_seq_len(n) for n in (shape.seq_lens if seq_lens is None else seq_lens)]
    say = log or (lambda _: None)
    # bfloat16 on a GPU, as training runs there; float32 on the CPU, whose bf16 is slow.
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    plain = shape.build_model().to(device=dev, dtype=dtype)
    patched = copy.deepcopy(plain)  # tokred patches its own copy; the same weights

    def run_cases(at: BenchShape) -> list[CaseResult]:
        out = []
        for case in cases:
            say(f"timing {case.name} ({case.batch} x{shape.batch}, {at.seq_len} tokens/sample)")
            out.append(measure_case(case, at, plain, patched, dev, warmup, repeats))
        return out

    main = run_cases(shape)
    probe_result = None
    if probe:
        say("timing the attention-allocation probe")
        probe_result = measure_probe(shape, plain, patched, dev, warmup, repeats)
    sweep = [SweepPoint(s.text_tokens, s.image_tokens, run_cases(s)) for s in sweep_shapes]
    machine["load_average_end"] = _load()
    return BenchResult(
        machine=machine,
        command=list(command or []),
        shape=shape.to_dict(),
        settings={
            "device": str(dev),
            "dtype": str(dtype).removeprefix("torch."),
            "warmup": warmup,
            "repeats": repeats,
            "sharing": "shared",
            "memory": MEMORY_MEASURES[dev.type],
        },
        cases=main,
        probe=probe_result,
        sweep=sweep,
        notes=bench_notes(),
    )


def bench_notes() -> list[str]:
    return [
        "time: one forward + backward of the LM loss on the output segment; arms interleaved "
        "per round (none, tokred, masking-only, renumbered-gather); median and IQR",
        "time ratio: the arm's time over none's in the same round, median over rounds",
        "plan FLOPs: the plan's training FLOPs over none's (tokred_core.plan_cost, exact "
        "causal pairs; dynamic selections keep their earliest candidates)",
        "arm FLOPs: what the arm computes: masking-only computes every token (1.0); "
        "renumbered-gather has no INJECT keys",
        "step FLOPs: the timed step's training FLOPs over none's, the plan's plus the LM head's "
        "(logits at every position, the same in every arm; the cost model leaves it out)",
        "efficiency: (1 - time ratio) / (1 - step FLOPs ratio), the share of the step's saved "
        "FLOPs that became saved time; none where the plan saves nothing",
        "masking-only hides the keys the plan's last layer does not attend to, in every layer; "
        "renumbered-gather computes ACTIVE tokens only (positions renumbered 0..n-1)",
    ]

"""Cost-model FLOPs of a whole run with its strategy (issue 10), priced step by step.

Why per step: a strategy decides per optimizer step how the step runs, so the price of a
run is the sum over its steps of what each step ran:

    a reduced step          the reduction's plan (the run's policies)
    a full step             every sample unreduced (strategy.full_steps: step s is full iff
                            floor(s p) != floor((s - 1) p), so floor(N p) of N steps)
    a distilled full step   unreduced plus the reduced pass on the same batch
                            (strategy.distill > 0: both run forward and backward)
    a gated step            per layer: the layers gate.jsonl names run unreduced, the
                            others reduced (strategy.gate_threshold; study/gate.py)
    PCGrad                  (strategy.surgery=pcgrad) each micro-batch runs as one
                            sub-batch per task, each collated alone: the same samples,
                            so the same FLOPs up to padding, which costs nothing

Why the first `priced_steps` steps stand for the rest: a step's batches come from the
seeded sampler and their mix repeats, so the cost model prices the layouts of the first
steps (as the study always did) and step s of a longer run takes the price of priced step
(s - 1) mod K + 1, under step s's own mode. The modes are exact over every step; for a run
no longer than K steps, so is everything. Forward FLOPs stand in for training FLOPs
(backward is about twice the forward of every token that runs, in every mode), and the
gradient-conflict probe gating reads is measurement, left out as in every other run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokred_core import DecoderShape, TaskPolicies, TokenLayout, plan_cost

from ..config import TrainConfig
from ..data.training_data import TrainData
from ..run.full_steps import is_full_step  # the trainer's rule: price the steps it runs
from .cost import micro_parts, run_sampler
from .gate import GateTimeline

__all__ = ["RunFlops", "StepPrice", "is_full_step", "price_steps", "run_flops"]


@dataclass(frozen=True)
class StepPrice:
    """Forward FLOPs per layer of one optimizer step's micro-batches."""

    reduced: tuple[int, ...]
    """Under the run's policies."""
    full: tuple[int, ...]
    """Unreduced."""


def _layer_flops(policies: TaskPolicies, layout: TokenLayout, shape: DecoderShape) -> list[int]:
    plan = policies.plan(layout, shape.num_layers)
    return [layer.flops for layer in plan_cost(plan, shape).layers]


def _add(total: list[int], more: list[int]) -> list[int]:
    return [a + b for a, b in zip(total, more, strict=True)]


def _gated(price: StepPrice, layers: frozenset[int]) -> int:
    """A step with `layers` unreduced and the others reduced."""
    pairs = enumerate(zip(price.reduced, price.full, strict=True))
    return sum(full if i in layers else reduced for i, (reduced, full) in pairs)


def _layouts(data: TrainData, parts: dict, per_task: bool) -> list[TokenLayout]:
    if not parts:
        return []
    if per_task:  # PCGrad: one sub-batch per task, each collated alone
        return [data.collate({task: idx})["layout"] for task, idx in parts.items()]
    return [data.collate(parts)["layout"]]


def price_steps(
    data: TrainData,
    config: TrainConfig,
    policies: TaskPolicies,
    shape: DecoderShape,
    steps: int,
    *,
    per_task: bool = False,
) -> list[StepPrice]:
    """The prices of optimizer steps 1..`steps` of a run of `config` (its samples of
    data.train_tasks), each micro-batch one batch or, `per_task`, one per task."""
    sampler = run_sampler(config, data)
    tasks = tuple(config.data.train_tasks)
    accum = config.optim.grad_accum
    unreduced = TaskPolicies()
    prices = []
    for step in range(1, steps + 1):
        reduced = [0] * shape.num_layers
        full = [0] * shape.num_layers
        for micro in range((step - 1) * accum, step * accum):
            for layout in _layouts(data, micro_parts(sampler, micro, tasks), per_task):
                reduced = _add(reduced, _layer_flops(policies, layout, shape))
                full = _add(full, _layer_flops(unreduced, layout, shape))
        prices.append(StepPrice(tuple(reduced), tuple(full)))
    return prices


@dataclass(frozen=True)
class RunFlops:
    """A run's forward FLOPs with its strategy, and what they are made of."""

    forward_flops: int
    """Every step as it ran (the table in the module docstring)."""
    reduced_flops: int
    """The same steps had every one run the reduction alone (no strategy)."""
    unreduced_flops: int
    """The same steps had every one run unreduced."""
    steps: int
    priced_steps: int
    full_steps: int
    distill_steps: int
    gated_layer_steps: int
    """(layer, step) pairs run unreduced by the gate, outside full steps."""
    per_task_sub_batches: bool

    def to_dict(self) -> dict:
        return asdict(self)


def run_flops(
    data: TrainData,
    config: TrainConfig,
    policies: TaskPolicies,
    shape: DecoderShape,
    steps: int,
    priced_steps: int,
    gate: GateTimeline | None = None,
) -> RunFlops:
    """The FLOPs of `steps` optimizer steps of a run of `config` under `policies`, with
    config.strategy (full steps, distillation, PCGrad) and, for a gating run, `gate`."""
    strategy = config.strategy
    per_task = strategy.surgery == "pcgrad"
    prices = price_steps(data, config, policies, shape, min(priced_steps, steps), per_task=per_task)
    total = reduced_total = full_total = 0
    full_steps = distill_steps = gated = 0
    for step in range(1, steps + 1):
        price = prices[(step - 1) % len(prices)]
        reduced, full = sum(price.reduced), sum(price.full)
        reduced_total, full_total = reduced_total + reduced, full_total + full
        if strategy.full_steps and is_full_step(step, strategy.full_steps):
            full_steps += 1
            distill_steps += strategy.distill > 0
            total += full + (reduced if strategy.distill > 0 else 0)
        elif gate is not None and (layers := gate.full_layers_at(step)):
            gated += len(layers)
            total += _gated(price, layers)
        else:
            total += reduced
    return RunFlops(
        forward_flops=total,
        reduced_flops=reduced_total,
        unreduced_flops=full_total,
        steps=steps,
        priced_steps=len(prices),
        full_steps=full_steps,
        distill_steps=distill_steps,
        gated_layer_steps=gated,
        per_task_sub_batches=per_task,
    )

"""Cost-model FLOPs of a run's training batches: what one arm spends against another.

Why the real batches: a run's cost depends on its mix of tasks, sequence lengths and
padding, so the cost model prices the very layouts the run trains on (the sampler is a pure
function of the seed, so they are rebuilt without training), for the tasks it trains.
Forward FLOPs stand in for training FLOPs: backward is about twice the forward for every
token that runs, so ratios are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokred_core import DecoderShape, TaskPolicies, plan_cost
from torch import nn

from ..config import TrainConfig
from ..data.training_data import TrainData
from ..run.sampler import MixedBatchSampler

__all__ = ["decoder_shape_of", "training_flops"]


def decoder_shape_of(model: nn.Module) -> DecoderShape:
    """The decoder shape of a Hugging Face model (a wrapper's text config preferred)."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config to read a decoder shape from")
    return DecoderShape.from_hf_config(config.to_dict(), source=type(model).__name__)


def training_flops(
    data: TrainData,
    config: TrainConfig,
    policies: TaskPolicies,
    shape: DecoderShape,
    num_micro_batches: int,
    tasks: Sequence[str] | None = None,
) -> int:
    """Forward FLOPs of the first `num_micro_batches` micro-batches the run trains, under
    `policies`, keeping the samples of `tasks` (default: the run's data.train_tasks)."""
    tasks = tuple(config.data.train_tasks if tasks is None else tasks)
    sampler = MixedBatchSampler(
        data.sizes(), config.data.understanding_ratio, config.optim.batch_size, config.run.seed
    )
    total = 0
    for m in range(num_micro_batches):
        parts = {t: idx for t, idx in sampler.draw(m).items() if t in tasks and len(idx)}
        if not parts:
            continue
        layout = data.collate(parts)["layout"]
        total += plan_cost(policies.plan(layout, shape.num_layers), shape).forward_flops
    return total

"""A run's training batches rebuilt without training: their tokens (the token budget)
and the layouts the cost model prices (what one arm spends against another; a run's
FLOPs with its strategy, step by step, are study/strategy_cost.py's).

Why the real batches: a run's cost depends on its mix of tasks, sequence lengths and
padding, so the cost model prices the very layouts the run trains on (the sampler is a pure
function of the seed, so they are rebuilt without training), for the tasks it trains.
Forward FLOPs stand in for training FLOPs: backward is about twice the forward for every
token that runs, so ratios are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokred_core import DecoderShape
from torch import nn

from ..config import TrainConfig
from ..data.training_data import TrainData
from ..run.sampler import MixedBatchSampler

__all__ = [
    "decoder_shape_of",
    "micro_parts",
    "run_sampler",
    "steps_for_tokens",
    "training_tokens",
]


def decoder_shape_of(model: nn.Module) -> DecoderShape:
    """The decoder shape of a Hugging Face model (a wrapper's text config preferred)."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config to read a decoder shape from")
    return DecoderShape.from_hf_config(config.to_dict(), source=type(model).__name__)


def run_sampler(config: TrainConfig, data: TrainData) -> MixedBatchSampler:
    """The run's own sampler: the same micro-batches, rebuilt without training."""
    return MixedBatchSampler(
        data.sizes(), config.data.understanding_ratio, config.optim.batch_size, config.run.seed
    )


def micro_parts(sampler: MixedBatchSampler, micro: int, tasks: Sequence[str]) -> dict[str, Any]:
    """The sample indices of micro-batch `micro` that a run training `tasks` keeps."""
    return {t: idx for t, idx in sampler.draw(micro).items() if t in tasks and len(idx)}


def _micro_tokens(data: TrainData, sampler: MixedBatchSampler, micro: int, tasks) -> int:
    """Tokens (attention mask ones, as the trainer counts them) of one micro-batch."""
    parts = micro_parts(sampler, micro, tasks)
    return int(data.collate(parts)["attention_mask"].sum()) if parts else 0


def training_tokens(data: TrainData, config: TrainConfig) -> int:
    """Tokens a run of `config` trains on over all its steps (data.train_tasks' samples)."""
    sampler = run_sampler(config, data)
    micros = config.optim.max_steps * config.optim.grad_accum
    tasks = tuple(config.data.train_tasks)
    return sum(_micro_tokens(data, sampler, m, tasks) for m in range(micros))


def steps_for_tokens(data: TrainData, config: TrainConfig, tokens: int) -> int:
    """Optimizer steps after which a run of `config` has trained on at least `tokens`
    tokens (its own max_steps is ignored): the equal-compute budget of the study."""
    if tokens <= 0:
        raise ValueError(f"a token budget of {tokens}: need at least one token")
    sampler = run_sampler(config, data)
    tasks = tuple(config.data.train_tasks)
    accum = config.optim.grad_accum
    seen = micro = 0
    while seen < tokens:
        added = _micro_tokens(data, sampler, micro, tasks)
        if added == 0:  # the stream would never reach the budget
            raise ValueError(f"micro-batch {micro} holds no samples of {list(tasks)}")
        seen += added
        micro += 1
    return -(-micro // accum)

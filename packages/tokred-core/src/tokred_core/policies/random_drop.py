"""`random_drop`: drop a random share of image tokens from a layer on.

The control for the attention-ranked policies: if random drops do as well, the ranking is
not what helps. Seeded per call, so a plan (and its checkpoint recomputation) is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Task, TokenLayout
from ..plans import ReductionPlan, _check_ratio, keep_counts
from ..roles import Role
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens

__all__ = ["RandomDrop", "RandomDropConfig"]


@dataclass
class RandomDropConfig(PolicyConfig):
    layer: int = 0
    """First layer without the dropped image tokens."""
    keep_ratio: float = 0.5
    """Fraction of image tokens kept."""
    seed: int = 0
    """Seed of the draw (the same layout gives the same drop)."""

    def __post_init__(self) -> None:
        _check_ratio("random_drop keep_ratio", self.keep_ratio)


@register_policy
class RandomDrop(Policy):
    name = "random_drop"
    config_class = RandomDropConfig
    tasks = frozenset({Task.UNDERSTANDING})

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        check_layer(self.config.layer, num_layers, "random_drop layer")
        image = require_image_tokens(layout, self.name)
        # One draw per sample over its own image tokens, so a sample's drop does not depend
        # on the other samples or the padding of the batch it happens to be in.
        dropped = torch.zeros_like(image)
        for b in range(layout.batch_size):
            positions = torch.nonzero(image[b]).squeeze(1)
            gen = torch.Generator().manual_seed(self.config.seed)
            order = torch.randperm(positions.numel(), generator=gen).to(positions.device)
            keep = int(keep_counts(torch.tensor([positions.numel()]), self.config.keep_ratio)[0])
            dropped[b, positions[order[keep:]]] = True
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        plan.roles[self.config.layer :].masked_fill_(dropped[None], int(Role.DROPPED))
        return plan

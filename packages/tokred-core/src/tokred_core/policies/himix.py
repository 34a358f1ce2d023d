"""`himix`: image tokens leave the queries but stay as keys/values (PAPER.md section 2).

From `start_layer` on, image tokens are INJECT: each layer computes their keys/values from
the layer-0 image embeddings through its own input norm and image projections, and the
image hidden states never go through attention or the FFN. Layers before `start_layer`
run in full (0 is HiMix as published).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan
from ..roles import Role
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens

__all__ = ["HiMix", "HiMixConfig"]


@dataclass
class HiMixConfig(PolicyConfig):
    start_layer: int = 0
    """First layer in which image tokens are INJECT instead of ACTIVE."""

    def __post_init__(self) -> None:
        if self.start_layer < 0:
            raise TokredError(f"himix start_layer={self.start_layer} must be >= 0")


@register_policy
class HiMix(Policy):
    name = "himix"
    config_class = HiMixConfig
    tasks = frozenset({Task.UNDERSTANDING})

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        check_layer(self.config.start_layer, num_layers, "himix start_layer")
        image = require_image_tokens(layout, self.name)
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        plan.roles[self.config.start_layer :].masked_fill_(image[None], int(Role.INJECT))
        return plan

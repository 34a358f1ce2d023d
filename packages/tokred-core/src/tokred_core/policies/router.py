"""`router`: a learned per-task router, mixture-of-depths style (UniMoD, p-MoD).

In every routed layer a small router of the task (one per task and layer, added to the
model by tokred-models) scores the task's image tokens from their hidden states entering
the layer; the top `capacity` share of each sample gets the layer's compute (attention as
queries and keys at their original positions, FFN), the rest BYPASS that layer only and
compete again in the next. The picked tokens' update is scaled by a gate of their score,
which is how the router is trained end to end. Text tokens are never routed.

Layers [start_layer, end_layer) are routed; by default every layer but the first and the
last (which stay full, as in HMGen).

Not causal for generation: whether token i is picked depends on the scores of the tokens
after it (top-k over the whole sequence), so a model trained this way cannot decode one
token at a time with the same choices. Kept as published; decoding runs unreduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan, Route
from .base import Policy, PolicyConfig, register_policy, require_image_tokens

__all__ = ["Router", "RouterConfig", "routed_layers"]


@dataclass
class RouterConfig(PolicyConfig):
    capacity: float = 0.5
    """Share of each sample's image tokens that gets a routed layer's compute, in (0, 1]."""
    start_layer: int = 1
    """First routed layer."""
    end_layer: int | None = None
    """One past the last routed layer; default: the last layer (which stays full)."""

    def __post_init__(self) -> None:
        c = self.capacity
        if (
            isinstance(c, bool)
            or not isinstance(c, (int, float))
            or math.isnan(c)
            or not 0.0 < float(c) <= 1.0
        ):
            shown = f"{c:g}" if isinstance(c, (int, float)) and not isinstance(c, bool) else repr(c)
            raise TokredError(f"router capacity={shown} must be in (0, 1]")
        if self.start_layer < 0:
            raise TokredError(f"router start_layer={self.start_layer} must be >= 0")
        if self.end_layer is not None and self.end_layer <= self.start_layer:
            raise TokredError(
                f"router end_layer={self.end_layer} must be greater than "
                f"start_layer={self.start_layer} (layers [start_layer, end_layer) are routed)"
            )


def routed_layers(config: RouterConfig, num_layers: int) -> list[int]:
    """The routed layer indices of a `num_layers` stack; an error when there is none."""
    end = num_layers - 1 if config.end_layer is None else config.end_layer
    if end > num_layers:
        raise TokredError(
            f"router end_layer={end} is out of range: the model has {num_layers} layers, so it "
            f"must be at most {num_layers}"
        )
    if config.start_layer >= end:
        raise TokredError(
            f"router start_layer={config.start_layer} leaves no layer to route in a "
            f"{num_layers}-layer model (routed: [start_layer, {end}))"
        )
    return list(range(config.start_layer, end))


@register_policy
class Router(Policy):
    name = "router"
    config_class = RouterConfig

    def routed_layers(self, num_layers: int) -> list[int]:
        return routed_layers(self.config, num_layers)

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        layers = self.routed_layers(num_layers)
        image = require_image_tokens(layout, self.name)
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        # One route per task present: each task's rows are scored by that task's routers.
        routes = tuple(
            Route(layer, Task(t), image & layout.task_mask(Task(t))[:, None], self.config.capacity)
            for t in layout.tasks.unique().tolist()
            for layer in layers
        )
        return ReductionPlan(plan.roles, routes=routes)

"""`hmgen`: shallow layers in the middle of the stack (PAPER.md section 3).

In a shallow layer image tokens BYPASS (no attention, no FFN, hidden state unchanged) and
text tokens attend to text only; every other layer is full. By default the K shallow
layers alternate with full layers around the middle of the stack, which the paper found
best; `pattern=contiguous` puts them side by side, and `layers` names them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import TokredError
from ..layout import TokenLayout
from ..plans import ReductionPlan
from ..roles import Role
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens

__all__ = ["HMGen", "HMGenConfig", "shallow_layers"]


@dataclass
class HMGenConfig(PolicyConfig):
    num_shallow: int = 3
    """K, the number of shallow layers (ignored when `layers` is given)."""
    pattern: Literal["alternate", "contiguous"] = "alternate"
    """How the K shallow layers are placed around the middle of the stack."""
    layers: list[int] | None = None
    """Explicit shallow layer indices, overriding num_shallow and pattern."""

    def __post_init__(self) -> None:
        if self.num_shallow < 0:
            raise TokredError(f"hmgen num_shallow={self.num_shallow} must be >= 0")
        if self.pattern not in ("alternate", "contiguous"):
            raise TokredError(f"hmgen pattern={self.pattern!r} must be 'alternate' or 'contiguous'")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise TokredError(f"hmgen layers={self.layers} names a layer twice")


def shallow_layers(config: HMGenConfig, num_layers: int) -> list[int]:
    """The shallow layer indices for a stack of `num_layers`, first and last layer kept full."""
    if config.layers is not None:
        for layer in config.layers:
            check_layer(layer, num_layers, "hmgen layer")
        return sorted(config.layers)
    k = config.num_shallow
    if k == 0:
        return []
    span = 2 * k - 1 if config.pattern == "alternate" else k
    if span > num_layers - 2:
        raise TokredError(
            f"hmgen num_shallow={k} with pattern {config.pattern} needs {span} middle layers but "
            f"a {num_layers}-layer model has only {max(num_layers - 2, 0)} between its first and last"
        )
    start = (num_layers - span) // 2
    step = 2 if config.pattern == "alternate" else 1
    return [start + step * i for i in range(k)]


@register_policy
class HMGen(Policy):
    name = "hmgen"
    config_class = HMGenConfig

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        layers = shallow_layers(self.config, num_layers)
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        if layers:
            image = require_image_tokens(layout, self.name)
            for layer in layers:
                plan.roles[layer].masked_fill_(image, int(Role.BYPASS))
        return plan

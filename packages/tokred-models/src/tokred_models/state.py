"""Per-forward execution state shared by the reduced layers of one model call.

Created once per forward from the layout (patch.py) and handed to every decoder layer
through the layer kwargs, so that gradient-checkpoint recomputation, which replays the
layer call with the same kwargs, sees the very same object: the same roles, the same
layer-0 embeddings, and selections already made are not made again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tokred_core import ReductionPlan, TokenLayout

__all__ = ["ExecutionState", "ProbeCallback"]

# probe(state, layer_idx, q (B,H,Nq,D), k (B,Hkv,Nk,D), q_tokens (B,Nq) long, k_tokens (B,Nk) long,
#       q_valid (B,Nq) bool, k_valid (B,Nk) bool, *, window, scale) -> None
ProbeCallback = Callable[..., None]


@dataclass
class ExecutionState:
    layout: TokenLayout
    plan: ReductionPlan
    groups: torch.Tensor
    """(B, N) projection group per token (0 = text)."""
    embeddings: torch.Tensor | None = None
    """Input of layer 0, the source of INJECT keys/values at every layer."""
    selected_layers: set[int] = field(default_factory=set)
    probe: ProbeCallback | None = None
    probed_layers: set[int] = field(default_factory=set)

    @property
    def roles(self) -> torch.Tensor:
        return self.plan.roles

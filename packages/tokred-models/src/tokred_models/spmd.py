"""SPMD safety: every process of a data-parallel or sharded job runs the same modules.

FSDP2 pairs the all-gathers and reduce-scatters of its processes by order, and
DistributedDataParallel (without find_unused_parameters, which costs a graph traversal
every step) waits for a gradient of every trainable weight. So a module that a task may
skip (an image projection set, a layer with no work, Janus's vision encoder) must still
run in a process whose micro-batch lacks that task: on zero rows where the module takes
them (projections.stacked_projection), else through `zero_touch`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["zero_touch"]


def zero_touch(module: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A 0 of `like`'s dtype that depends on one element of each trainable weight of
    `module`: added to an output, it hands each weight a zero gradient. Call it inside the
    forward that owns `module` (under FSDP2 its weights are gathered only there)."""
    touched = [p.reshape(-1)[:1].sum() for p in module.parameters() if p.requires_grad]
    if not touched:
        return like.new_zeros(())
    return (torch.stack(touched).sum() * 0).to(like.dtype)

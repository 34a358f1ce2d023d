"""Gradient surgery between the two tasks (strategy.surgery=pcgrad; Yu et al. 2020,
"Gradient Surgery for Multi-Task Learning").

Each micro-batch runs as one sub-batch per task, so after a step's backward passes the
trainer holds each task's gradient g_u, g_g of the step's loss (the samples of a batch are
independent, so the two sum to the plain step's gradient, up to padding rounding: the
same FLOPs, one more copy of the gradients). Where they conflict, g_u . g_g < 0 over all
trainable parameters, each loses its component along the other:

    g_u' = g_u - (g_u . g_g / |g_g|^2) g_g        g_g' = g_g - (g_g . g_u / |g_u|^2) g_u

and the step uses g_u' + g_g'. Where they agree, the sum is unchanged. The dot products
stay on the device: no host synchronisation.

Under DDP the sub-batches' backward passes run without DDP's reduction and each task's
gradient is averaged across the ranks here, before the projection (the projection of the
averages, as in one process with the global batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as torch_dist

__all__ = ["PCGrad", "pcgrad_combine"]


def pcgrad_combine(
    first: Sequence[torch.Tensor | None], second: Sequence[torch.Tensor | None]
) -> list[torch.Tensor | None]:
    """Per parameter, g_1' + g_2' of the two tasks' gradients (None: no gradient)."""
    pairs = [(a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    if not pairs:
        return [a if a is not None else b for a, b in zip(first, second, strict=True)]
    device = pairs[0][0].device
    dot = torch.zeros((), dtype=torch.float64, device=device)
    n1 = torch.zeros_like(dot)
    n2 = torch.zeros_like(dot)
    for a, b in pairs:
        a64, b64 = a.double(), b.double()
        dot += (a64 * b64).sum()
        n1 += (a64 * a64).sum()
        n2 += (b64 * b64).sum()
    conflict = dot < 0
    zero = torch.zeros_like(dot)
    # g_1 loses dot/|g_2|^2 of g_2, and g_2 loses dot/|g_1|^2 of g_1; 0 without conflict.
    c2 = torch.where(conflict & (n2 > 0), dot / n2.clamp_min(1e-300), zero)
    c1 = torch.where(conflict & (n1 > 0), dot / n1.clamp_min(1e-300), zero)
    out = []
    for a, b in zip(first, second, strict=True):
        if a is None or b is None:
            out.append(a if a is not None else b)
            continue
        out.append(a + b - (c2.to(a.dtype) * b + c1.to(a.dtype) * a))
    return out


class PCGrad:
    """Holds each task's gradient over a step and writes the combined one into `.grad`."""

    def __init__(self, params: Sequence[torch.nn.Parameter], world_size: int = 1) -> None:
        self.params = list(params)
        self.world_size = world_size
        self.grads: list[list[torch.Tensor | None]] = [
            [None] * len(self.params),
            [None] * len(self.params),
        ]

    def stash(self, task: int) -> None:
        """Move the parameters' .grad (from task `task`'s sub-batches) into its buffer."""
        held = self.grads[task]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            held[i] = p.grad if held[i] is None else held[i].add_(p.grad)
            p.grad = None

    def apply(self) -> None:
        """Write g_u' + g_g' into every parameter's .grad and clear the buffers."""
        if self.world_size > 1:
            for held in self.grads:
                self._average(held)
        combined = pcgrad_combine(*self.grads)
        for p, g in zip(self.params, combined, strict=True):
            p.grad = g
        self.grads = [[None] * len(self.params), [None] * len(self.params)]

    def _average(self, held: list[torch.Tensor | None]) -> None:
        # Every rank reduces every parameter (a rank whose sub-batches held no sample of a
        # task has zeros), so the collectives match across ranks.
        for i, p in enumerate(self.params):
            if held[i] is None:
                held[i] = torch.zeros_like(p)
            torch_dist.all_reduce(held[i])
            held[i].div_(self.world_size)

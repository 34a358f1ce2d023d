"""Layerwise attention allocation (PAPER.md section 1, Eq. 2).

    alpha_S(l) = (1/H) * sum_h sum_i sum_{j in S} A[l, h, i, j]

normalised so each layer's shares sum to 1. The input is the attention mass already summed
over queries (and batch) per (layer, head, query segment, key segment), which is what the
kernels' segment-mass op and the model probe produce without ever holding A itself.
"""

from __future__ import annotations

import torch

__all__ = ["key_segment_shares", "key_segment_shares_by_query"]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    total = x.sum(-1, keepdim=True)
    return torch.where(
        total > 0, x / total.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x)
    )


def key_segment_shares(mass: torch.Tensor) -> torch.Tensor:
    """mass: (L, H, Sq, Sk) -> (L, Sk): share of attention each key segment receives."""
    if mass.dim() != 4:
        raise ValueError(
            f"mass must be (layers, heads, query segments, key segments), got {tuple(mass.shape)}"
        )
    per_layer = mass.double().mean(1).sum(1)
    return _normalise(per_layer)


def key_segment_shares_by_query(mass: torch.Tensor) -> torch.Tensor:
    """mass: (L, H, Sq, Sk) -> (L, Sq, Sk): for each query segment, the share it gives each
    key segment (rows of query segments that have no queries are zero)."""
    if mass.dim() != 4:
        raise ValueError(
            f"mass must be (layers, heads, query segments, key segments), got {tuple(mass.shape)}"
        )
    return _normalise(mass.double().mean(1))

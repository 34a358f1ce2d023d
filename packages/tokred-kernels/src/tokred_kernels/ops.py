"""The public, dispatched ops: same signatures as the torch reference, routed by `dispatch`.

Callers (tokred-models) import these; the reference modules (`segment_mass`, `importance`,
`gather_scatter`, `position_attention`) stay importable directly for tests that need the
oracle itself.
"""

from __future__ import annotations

from torch import Tensor

from .dispatch import call
from .gather_scatter import TokenIndex
from .varlen_runs import VarlenPlan

__all__ = [
    "segment_attention_mass",
    "segment_mass_by_query_segment",
    "attention_importance",
    "topk_per_sample",
    "token_index",
    "gather_packed",
    "scatter_packed",
    "pack_to_padded",
    "padded_to_packed",
    "place_rows",
    "position_attention",
]


def segment_attention_mass(
    q: Tensor,
    k: Tensor,
    key_segments: Tensor,
    num_segments: int,
    query_valid: Tensor | None = None,
    key_valid: Tensor | None = None,
    causal: bool = True,
    scale: float | None = None,
    query_positions: Tensor | None = None,
    key_positions: Tensor | None = None,
    chunk_size: int = 256,
) -> Tensor:
    """(B, H, Nq, S) float32 softmax mass per key segment; see `segment_mass`."""
    return call(
        "segment_attention_mass",
        q=q,
        k=k,
        key_segments=key_segments,
        num_segments=num_segments,
        query_valid=query_valid,
        key_valid=key_valid,
        causal=causal,
        scale=scale,
        query_positions=query_positions,
        key_positions=key_positions,
        chunk_size=chunk_size,
    )


def segment_mass_by_query_segment(
    mass: Tensor, query_segments: Tensor, query_valid: Tensor | None, num_query_segments: int
) -> Tensor:
    """(B, H, Sq, Sk) mass summed over the queries of each query segment."""
    return call(
        "segment_mass_by_query_segment",
        mass=mass,
        query_segments=query_segments,
        query_valid=query_valid,
        num_query_segments=num_query_segments,
    )


def attention_importance(
    q: Tensor,
    k: Tensor,
    query_mask: Tensor,
    key_mask: Tensor,
    causal: bool = True,
    scale: float | None = None,
    query_positions: Tensor | None = None,
    key_positions: Tensor | None = None,
    chunk_size: int = 256,
    key_valid: Tensor | None = None,
) -> Tensor:
    """(B, Nk) float32 mean attention of the selected queries on each candidate key."""
    return call(
        "attention_importance",
        q=q,
        k=k,
        query_mask=query_mask,
        key_mask=key_mask,
        causal=causal,
        scale=scale,
        query_positions=query_positions,
        key_positions=key_positions,
        chunk_size=chunk_size,
        key_valid=key_valid,
    )


def topk_per_sample(scores: Tensor, candidate_mask: Tensor, keep: Tensor) -> Tensor:
    """(B, N) bool: the keep[b] best candidates per sample, ties to earlier positions."""
    return call("topk_per_sample", scores=scores, candidate_mask=candidate_mask, keep=keep)


def token_index(mask: Tensor) -> TokenIndex:
    """The `TokenIndex` of a (B, N) bool selection."""
    return call("token_index", mask=mask)


def gather_packed(x: Tensor, idx: TokenIndex) -> Tensor:
    """(B, N, ...) -> (total, ...) selected rows, differentiable."""
    return call("gather_packed", x=x, idx=idx)


def scatter_packed(base: Tensor, packed: Tensor, idx: TokenIndex) -> Tensor:
    """New (B, N, ...) = base with selected rows replaced by packed, differentiable."""
    return call("scatter_packed", base=base, packed=packed, idx=idx)


def pack_to_padded(packed: Tensor, idx: TokenIndex) -> Tensor:
    """(total, ...) -> (B, max_count, ...) with zero pad rows, differentiable."""
    return call("pack_to_padded", packed=packed, idx=idx)


def padded_to_packed(padded: Tensor, idx: TokenIndex) -> Tensor:
    """(B, max_count, ...) -> (total, ...), differentiable."""
    return call("padded_to_packed", padded=padded, idx=idx)


def place_rows(src: Tensor, slots: Tensor, num_rows: int) -> Tensor:
    """(n, ...) -> (num_rows, ...) zeros with row slots[i] = src[i], differentiable."""
    return call("place_rows", src=src, slots=slots, num_rows=num_rows)


def position_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    *,
    scale: float,
    dropout: float = 0.0,
    window: int | None = None,
    varlen_plan: VarlenPlan | None = None,
) -> Tensor:
    """(B, H, Nq, D) attention masked by original positions; see `position_attention`.

    `varlen_plan` (from `build_varlen_plan` on the same positions and masks) lets the flash
    backend skip rebuilding, and synchronising for, its plan; other backends ignore it.
    """
    return call(
        "position_attention",
        q=q,
        k=k,
        v=v,
        q_positions=q_positions,
        k_positions=k_positions,
        q_valid=q_valid,
        k_valid=k_valid,
        scale=scale,
        dropout=dropout,
        window=window,
        varlen_plan=varlen_plan,
    )

"""Attention mass per key segment: the paper's layerwise attention-allocation diagnostic.

PAPER.md section 1 defines alpha_S(l) = (1/H) sum_h sum_i sum_{j in S} A[l,h,i,j]: how much
of the attention of a layer lands on each segment (system / image / instruction / output).
Only the per-segment sums are needed, so the (Nq, Nk) probability matrix is reduced to
(Nq, num_segments) one query chunk at a time and never kept. Memory beyond the inputs is
O(B * H * chunk_size * Nk) for one chunk plus O(B * Nk * num_segments) for the segment
one-hot and O(B * H * Nq * num_segments) for the result.

Results are detached statistics (computed under `torch.no_grad`): keeping an autograd
graph would keep every chunk alive and defeat the memory bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention_chunks import check_attention_inputs, iter_attention_chunks
from .errors import KernelError

__all__ = ["segment_attention_mass", "segment_mass_by_query_segment"]


def _segment_one_hot(
    name: str, segments: Tensor, valid: Tensor, num_segments: int, shape: tuple[int, int]
) -> Tensor:
    """(B, N, S) float32 one-hot of the segment ids of valid tokens (invalid rows are zero).

    Ids of invalid (padding) tokens are ignored, so callers may leave any value there.
    """
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 0:
        raise KernelError(f"num_segments must be a non-negative int, got {num_segments!r}")
    if not isinstance(segments, Tensor) or segments.is_floating_point():
        raise KernelError(f"{name} must be an integer tensor of shape {shape}")
    if tuple(segments.shape) != shape:
        raise KernelError(f"{name} must have shape {shape}, got {tuple(segments.shape)}")
    segments = segments.to(device=valid.device, dtype=torch.long)
    bad = valid & ((segments < 0) | (segments >= num_segments))
    if bool(bad.any()):
        first = segments[bad][0].item()
        raise KernelError(
            f"{name} has id {first} outside [0, {num_segments}); "
            f"raise num_segments or fix the segment ids"
        )
    ids = torch.arange(num_segments, device=valid.device)
    return ((segments[..., None] == ids) & valid[..., None]).float()


@torch.no_grad()
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
    """Softmax attention mass each query puts on each key segment.

    Args:
        q: (B, H, Nq, D) queries (post-RoPE, as the layer's attention sees them).
        k: (B, Hkv, Nk, D) keys; H must be a multiple of Hkv (query head h reads kv head
            h // (H // Hkv)).
        key_segments: (B, Nk) integer ids in [0, num_segments) (ignored for invalid keys).
        num_segments: number of key segments S.
        query_valid: (B, Nq) bool, False for padding queries (default all True).
        key_valid: (B, Nk) bool, False for padding keys (default all True).
        causal: mask key j from query i unless key_positions[b, j] <= query_positions[b, i].
        scale: softmax scale, default 1 / sqrt(D).
        query_positions, key_positions: (B, N) or (N,) integer positions, default arange
            (pass the real positions under left padding or when queries are a suffix).
        chunk_size: queries per chunk; the result does not depend on it.

    Returns:
        (B, H, Nq, S) float32. Each valid query that sees a valid key has a row summing to
        1; rows of invalid queries or queries that see no key are all zero.
    """
    inputs = check_attention_inputs(
        q, k, query_valid, key_valid, causal, scale, query_positions, key_positions
    )
    b, h, nq = inputs.batch, inputs.heads, inputs.num_queries
    one_hot = _segment_one_hot(
        "key_segments", key_segments, inputs.key_valid, num_segments, (b, inputs.num_keys)
    )
    out = torch.zeros(b, h, nq, num_segments, dtype=torch.float32, device=q.device)
    seg = one_hot[:, None, None]  # (B, 1, 1, Nk, S), broadcast over (Hkv, G)
    for chunk in iter_attention_chunks(inputs, chunk_size, normalize=False):
        # Every valid key is in one segment, so the segment sums of a row's unnormalised
        # weights add up to its row sum: the division is over (c, S), not (c, Nk).
        # (B, Hkv, G, c, S), over the keys the chunk computed (a prefix, in position order)
        mass = torch.matmul(chunk.probs, seg[..., : chunk.probs.shape[-1], :])
        mass.div_(mass.sum(dim=-1, keepdim=True).clamp_min_(1.0))
        out[:, :, chunk.start : chunk.end] = mass.reshape(b, h, chunk.end - chunk.start, -1)
    return out


@torch.no_grad()
def segment_mass_by_query_segment(
    mass: Tensor,
    query_segments: Tensor,
    query_valid: Tensor | None,
    num_query_segments: int,
) -> Tensor:
    """Sum per-query segment mass over the queries of each query segment.

    Turns `segment_attention_mass` output into a (query segment x key segment) table, e.g.
    how much the output tokens attend to the image versus the system prompt.

    Args:
        mass: (B, H, Nq, Sk) from `segment_attention_mass`.
        query_segments: (B, Nq) integer ids in [0, num_query_segments) (ignored for invalid
            queries).
        query_valid: (B, Nq) bool or None (all valid); invalid queries are left out.
        num_query_segments: Sq.

    Returns:
        (B, H, Sq, Sk) float32: entry [b, h, s, t] = sum over valid queries i of segment s
        of mass[b, h, i, t]. Divide by the number of queries per segment for a mean.
    """
    if not isinstance(mass, Tensor) or mass.dim() != 4:
        raise KernelError(f"mass must be a (B, H, Nq, S) tensor, got {type(mass).__name__}")
    b, _, nq, _ = mass.shape
    if query_valid is None:
        query_valid = torch.ones(b, nq, dtype=torch.bool, device=mass.device)
    elif query_valid.dtype != torch.bool or tuple(query_valid.shape) != (b, nq):
        raise KernelError(f"query_valid must be a bool tensor of shape {(b, nq)}")
    query_valid = query_valid.to(mass.device)
    one_hot = _segment_one_hot(
        "query_segments", query_segments, query_valid, num_query_segments, (b, nq)
    )
    return torch.einsum("bqs,bhqt->bhst", one_hot, mass.float())

"""Attention-based token importance and per-sample top-k selection (FastV, PyramidDrop).

FastV and PyramidDrop rank image tokens by the attention they receive at a selection layer
and keep the top ones. Fused attention never returns probabilities and eager attention with
`output_attentions=True` costs O(H * N^2) memory per layer, so the scores are recomputed
here from q and k, a chunk of queries at a time: extra memory is O(B * H * chunk_size * Nk)
for one chunk plus O(B * Nk) for the result.

Scores are detached (`torch.no_grad`): selection is not differentiable, and keeping the
graph would keep every chunk alive.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention_chunks import check_attention_inputs, iter_attention_chunks
from .errors import KernelError

__all__ = ["attention_importance", "topk_per_sample"]


@torch.no_grad()
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
    """Mean attention probability that the selected queries give each candidate key.

    The softmax of every query runs over *all* its visible valid keys (`key_valid`, causal
    positions), exactly as in the model's attention; `key_mask` only chooses which columns
    are reported, so a candidate's score is its real share of attention.

    Averaging (not summing) over selected queries and heads makes scores comparable across
    samples with different numbers of selected queries: with `key_mask = key_valid` the
    scores of a sample sum to 1. The average runs over the H heads and the selected queries
    that see at least one valid key (a selected query that sees none has no distribution).

    Args:
        q: (B, H, Nq, D) queries; k: (B, Hkv, Nk, D) keys (GQA: H multiple of Hkv).
        query_mask: (B, Nq) bool, the queries whose attention is scored (e.g. the last
            instruction token for FastV, all text queries for PyramidDrop). Padding queries
            must be False here.
        key_mask: (B, Nk) bool, the candidate keys to report (e.g. image tokens).
        causal, scale, query_positions, key_positions, chunk_size: as in
            `segment_attention_mass`.
        key_valid: (B, Nk) bool, False for padding keys (default all True).

    Returns:
        (B, Nk) float32 scores; 0 for non-candidate keys and for samples with no selected
        query that sees a key.
    """
    if query_mask is None:
        raise KernelError("query_mask is required: a (B, Nq) bool tensor of scored queries")
    inputs = check_attention_inputs(
        q, k, query_mask, key_valid, causal, scale, query_positions, key_positions
    )
    b, nk = inputs.batch, inputs.num_keys
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
        raise KernelError(f"key_mask must be a bool tensor of shape {(b, nk)}")
    if tuple(key_mask.shape) != (b, nk):
        raise KernelError(f"key_mask must have shape {(b, nk)}, got {tuple(key_mask.shape)}")
    total = torch.zeros(b, nk, dtype=torch.float32, device=q.device)
    rows = torch.zeros(b, dtype=torch.float32, device=q.device)
    for chunk in iter_attention_chunks(inputs, chunk_size):
        # Unselected queries are "invalid" for the chunk iterator, so their rows are zero.
        # (a chunk may cover a prefix of the keys: the rest got no probability from it)
        total[:, : chunk.probs.shape[-1]] += chunk.probs.sum(dim=(1, 2, 3))
        rows += chunk.has_key.sum(dim=1)
    scores = total / (rows * inputs.heads).clamp_min(1.0)[:, None]
    return scores.masked_fill_(~key_mask.to(q.device), 0.0)


def topk_per_sample(scores: Tensor, candidate_mask: Tensor, keep: Tensor) -> Tensor:
    """Keep the `keep[b]` highest-scoring candidates of every sample.

    Samples keep different numbers of tokens (different image sizes, padding), so this is a
    ranked selection per row rather than `torch.topk` with one k. Ties go to the earlier
    position, and NaN scores rank as -inf, so the choice is deterministic and identical on
    every device (both sorts are stable).

    Args:
        scores: (B, N) floating scores.
        candidate_mask: (B, N) bool, which positions may be kept.
        keep: (B,) integer, number to keep per sample; 0 keeps nothing, a value at or above
            the number of candidates keeps all candidates. Negative values are an error.

    Returns:
        (B, N) bool mask of kept positions (always a subset of `candidate_mask`).
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise KernelError(f"scores must be a (B, N) tensor, got {type(scores).__name__}")
    b, n = scores.shape
    if (
        not isinstance(candidate_mask, Tensor)
        or candidate_mask.dtype != torch.bool
        or tuple(candidate_mask.shape) != (b, n)
    ):
        raise KernelError(f"candidate_mask must be a bool tensor of shape {(b, n)}")
    keep = torch.as_tensor(keep, device=scores.device)
    if (
        keep.is_floating_point()
        or keep.dtype == torch.bool
        or keep.dim() > 1
        or (keep.dim() == 1 and keep.numel() != b)
    ):
        raise KernelError(
            f"keep must be an integer tensor of shape ({b},) or a scalar, got {keep!r}"
        )
    keep = keep.to(torch.long).reshape(-1).expand(b)
    if bool((keep < 0).any()):
        raise KernelError(f"keep must be >= 0, got {keep.tolist()}")
    candidate_mask = candidate_mask.to(scores.device)
    key = scores.float().nan_to_num(nan=float("-inf"))
    # Lexicographic order (candidate first, then score descending, then position) from two
    # stable sorts: the later sort dominates, the earlier one breaks its ties.
    by_score = torch.sort(key, dim=1, descending=True, stable=True).indices
    cand_sorted = candidate_mask.gather(1, by_score).to(torch.uint8)
    by_cand = torch.sort(cand_sorted, dim=1, descending=True, stable=True).indices
    order = by_score.gather(1, by_cand)
    num_cand = candidate_mask.sum(dim=1)
    take = torch.arange(n, device=scores.device)[None, :] < torch.minimum(keep, num_cand)[:, None]
    return torch.zeros_like(candidate_mask).scatter_(1, order, take)

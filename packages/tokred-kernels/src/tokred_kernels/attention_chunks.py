"""Masked softmax attention probabilities, a chunk of queries at a time.

Both the attention-allocation probe (segment mass) and the importance scores of FastV /
PyramidDrop need attention *probabilities*, which fused attention kernels (SDPA, flash
attention) never expose, and `output_attentions=True` materialises the full (H, N, N)
matrix of every layer. This module recomputes them from q and k for `chunk_size` queries
at a time, so the largest temporary is (B, H, chunk, Nk) float32, and hands each chunk to
a reducer that immediately folds it into a small result.

Grouped-query attention is handled without repeating k: q is viewed as
(B, Hkv, G, Nq, D) with G = H // Hkv, which is exactly "query head h reads kv head h // G".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import KernelError

__all__ = ["AttentionChunk", "AttentionInputs", "check_attention_inputs", "iter_attention_chunks"]


#: Shifted scores are clamped here before exp (see iter_attention_chunks): e^-80 is a
#: normal float32 (the smallest is e^-87.3), so exp never takes its underflow path.
_EXP_FLOOR = -80.0


@dataclass(frozen=True)
class AttentionInputs:
    """Validated, defaulted attention inputs (masks and positions always present)."""

    q: Tensor
    """(B, H, Nq, D) queries, any floating dtype."""
    k: Tensor
    """(B, Hkv, Nk, D) keys, any floating dtype."""
    query_valid: Tensor
    """(B, Nq) bool; False rows get no probabilities at all."""
    key_valid: Tensor
    """(B, Nk) bool; False keys are never attended."""
    query_positions: Tensor
    """(B, Nq) long, compared with key positions for causal masking."""
    key_positions: Tensor
    """(B, Nk) long."""
    causal: bool
    scale: float
    in_order: bool = False
    """Both positions were left at their default (aranges from 0): under the causal mask
    queries [s, e) then see keys [0, e) only, which the chunks use to skip the rest."""

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def kv_heads(self) -> int:
        return self.k.shape[1]

    @property
    def num_queries(self) -> int:
        return self.q.shape[2]

    @property
    def num_keys(self) -> int:
        return self.k.shape[2]


@dataclass(frozen=True)
class AttentionChunk:
    """Probabilities of queries [start, end) of every sample and head."""

    start: int
    end: int
    probs: Tensor
    """(B, Hkv, G, end - start, n) float32; zero rows for invalid queries / no visible key.
    n is Nk, or fewer when the keys past n are hidden from every query of the chunk (causal
    inputs in position order): their probabilities are zero and not computed."""
    has_key: Tensor
    """(B, end - start) bool: the query is valid and sees at least one valid key."""


def _mask(name: str, mask: Tensor | None, shape: tuple[int, int], device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise KernelError(f"{name} must be a bool tensor of shape {shape}, got {_describe(mask)}")
    if tuple(mask.shape) != shape:
        raise KernelError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask.to(device)


def _positions(name: str, pos: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    if pos is None:
        return torch.arange(n, device=device).expand(batch, n)
    if not isinstance(pos, Tensor) or pos.is_floating_point() or pos.is_complex():
        raise KernelError(f"{name} must be an integer tensor of shape ({batch}, {n}) or ({n},)")
    if pos.dim() == 1:
        pos = pos.expand(batch, -1)
    if tuple(pos.shape) != (batch, n):
        raise KernelError(
            f"{name} must have shape ({batch}, {n}) or ({n},), got {tuple(pos.shape)}"
        )
    return pos.to(device=device, dtype=torch.long)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


def check_attention_inputs(
    q: Tensor,
    k: Tensor,
    query_valid: Tensor | None,
    key_valid: Tensor | None,
    causal: bool,
    scale: float | None,
    query_positions: Tensor | None,
    key_positions: Tensor | None,
) -> AttentionInputs:
    """Validate shapes, fill in default masks / positions / scale, with errors naming the value."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, Tensor) or t.dim() != 4 or not t.is_floating_point():
            raise KernelError(
                f"{name} must be a floating tensor (B, heads, N, D), got {_describe(t)}"
            )
    b, h, nq, d = q.shape
    bk, hkv, nk, dk = k.shape
    if bk != b or dk != d:
        raise KernelError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch and head dim"
        )
    if hkv == 0 or h % hkv != 0:
        raise KernelError(
            f"query heads ({h}) must be a positive multiple of kv heads ({hkv}) for GQA"
        )
    if k.device != q.device:
        raise KernelError(f"q is on {q.device} but k is on {k.device}")
    dev = q.device
    return AttentionInputs(
        q=q,
        k=k,
        query_valid=_mask("query_valid", query_valid, (b, nq), dev),
        key_valid=_mask("key_valid", key_valid, (b, nk), dev),
        query_positions=_positions("query_positions", query_positions, b, nq, dev),
        key_positions=_positions("key_positions", key_positions, b, nk, dev),
        causal=bool(causal),
        scale=float(scale) if scale is not None else 1.0 / math.sqrt(d) if d > 0 else 1.0,
        in_order=query_positions is None and key_positions is None,
    )


def iter_attention_chunks(
    inputs: AttentionInputs, chunk_size: int, normalize: bool = True
) -> Iterator[AttentionChunk]:
    """Yield the softmax probabilities of `chunk_size` queries at a time, in float32.

    Chunks in which no query is valid are skipped (the caller's zero-initialised result is
    already right for them), which makes "score only the last instruction token" (FastV)
    cost one chunk instead of Nq / chunk_size.

    normalize=False yields the weights before the division by their row sums (exp of
    the scores less their row maximum, zero where not visible): a caller that reduces
    the keys linearly (segment sums) divides its small result instead, one pass over the
    (chunk, Nk) weights fewer. Each row that sees a key sums to >= 1 (its maximum is 1).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise KernelError(f"chunk_size must be a positive int, got {chunk_size!r}")
    b, h, nq, d = inputs.q.shape
    hkv, nk = inputs.kv_heads, inputs.num_keys
    if b == 0 or nq == 0 or nk == 0:
        return
    g = h // hkv
    q = inputs.q.reshape(b, hkv, g, nq, d)
    # (B, Hkv, D, Nk): one contiguous float32 copy of k for every chunk (a transposed view
    # was copied again inside each chunk's matmul). A chunk's G query heads of a group go
    # in as rows of one matmul, (B, Hkv, G * c, D) @ (B, Hkv, D, Nk), so k is never
    # expanded over G either.
    k_t = inputs.k.float().transpose(-1, -2).contiguous()
    for start in range(0, nq, chunk_size):
        end = min(start + chunk_size, nq)
        q_valid = inputs.query_valid[:, start:end]
        if not bool(q_valid.any()):
            continue
        # In position order, causal queries [start, end) see keys [0, end) at most: the
        # rest of the (chunk, Nk) work is skipped (about half of it over a sequence).
        n = min(nk, end) if inputs.causal and inputs.in_order else nk
        visible = q_valid[:, :, None] & inputs.key_valid[:, None, :n]
        if inputs.causal:
            visible = visible & (
                inputs.key_positions[:, None, :n] <= inputs.query_positions[:, start:end, None]
            )
        c = end - start
        # The scale goes on the (chunk, D) queries, not on the (chunk, Nk) scores.
        q_rows = (q[:, :, :, start:end].float() * inputs.scale).reshape(b, hkv, g * c, d)
        scores = torch.matmul(q_rows, k_t[..., :n]).view(b, hkv, g, c, n)
        # Masks as a float bias and a float factor over (B, 1, 1, c, Nk): an add and a
        # multiply broadcast over the heads, where a boolean masked_fill_ ran 2x slower.
        hidden_bias = torch.zeros(visible.shape, device=scores.device).masked_fill_(
            ~visible, float("-inf")
        )[:, None, None]
        scores.add_(hidden_bias)
        row_max = scores.amax(dim=-1, keepdim=True)
        # A row with no visible key has max -inf; shifting by 0 keeps it all hidden, no NaN.
        row_max.masked_fill_(row_max == float("-inf"), 0.0)
        # exp of -inf, and of scores whose result underflows, takes the slow path of the
        # vectorised exp (5x and 20x the time of exp on normal results, measured on x86).
        # Clamped, every result is a normal float; the hidden ones are then set to 0, and
        # a visible weight below e^-80 (1.8e-35 of its row's maximum) reads as e^-80.
        scores.sub_(row_max).clamp_min_(_EXP_FLOOR).exp_().mul_(visible[:, None, None])
        if normalize:
            # The row maximum contributes exp(0) = 1, so a row with a visible key sums to
            # >= 1; clamping at 1 only touches empty rows, which stay all zero.
            scores.div_(scores.sum(dim=-1, keepdim=True).clamp_min_(1.0))
        yield AttentionChunk(start=start, end=end, probs=scores, has_key=visible.any(dim=-1))

"""Attention masked by original sequence positions: the torch reference and its input checks.

After token reduction the tokens a layer attends over are no longer a contiguous prefix:
keys can be `[ACTIVE tokens..., INJECT image tokens...]` with positions interleaved, so
causality must compare each token's *original* position, not its index. Query i may attend
key j iff `k_valid[b, j]`, `k_positions[b, j] <= q_positions[b, i]` and, with a window,
`q_positions[b, i] - k_positions[b, j] < window`.

Every backend agrees on every row, not only on real ones: a padding query, or a query that
sees no key, outputs exactly 0 and receives no gradient. This reference builds the dense
(B, Nq, Nk) boolean mask (O(B·Nq·Nk) memory) and hands it to
`scaled_dot_product_attention`, so it runs on any device and dtype and is the oracle of the
flex and flash backends.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import KernelError

__all__ = [
    "check_position_attention_inputs",
    "empty_attention_output",
    "position_attention",
    "position_visibility",
]


def _check_index(name: str, t: Any, b: int, n: int, *, boolean: bool) -> None:
    if not isinstance(t, Tensor):
        raise KernelError(f"{name} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != (b, n):
        raise KernelError(f"{name} must have shape {(b, n)}, got {tuple(t.shape)}")
    if boolean and t.dtype != torch.bool:
        raise KernelError(f"{name} must be bool, got {t.dtype}")
    if not boolean and (t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
        raise KernelError(f"{name} must be an integer tensor, got {t.dtype}")


def check_position_attention_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    dropout: float,
    window: int | None,
) -> None:
    """Raise KernelError naming the first caller mistake (shapes, dtypes, devices, window)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise KernelError(f"{name} must be a 4-D (B, heads, N, D) tensor")
    b, h, nq, d = q.shape
    _, hkv, nk, _ = k.shape
    if k.shape[:3] != v.shape[:3] or k.shape[0] != b:
        raise KernelError(
            f"k {tuple(k.shape)} and v {tuple(v.shape)} must share (B, Hkv, Nk) with B={b}"
        )
    if k.shape[3] != d:
        raise KernelError(f"q and k must share the head dim, got {d} and {k.shape[3]}")
    if hkv == 0 or h % hkv:
        raise KernelError(f"query heads ({h}) must be a multiple of kv heads ({hkv})")
    if not (q.dtype == k.dtype == v.dtype):
        raise KernelError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _check_index("q_positions", q_positions, b, nq, boolean=False)
    _check_index("k_positions", k_positions, b, nk, boolean=False)
    _check_index("q_valid", q_valid, b, nq, boolean=True)
    _check_index("k_valid", k_valid, b, nk, boolean=True)
    devices = {t.device for t in (q, k, v, q_positions, k_positions, q_valid, k_valid)}
    if len(devices) != 1:
        raise KernelError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise KernelError(f"window must be None or an int, got {window!r}")
    if window is not None and window < 1:
        raise KernelError(f"window must be >= 1 (a query always sees itself), got {window}")
    if not 0.0 <= dropout < 1.0:
        raise KernelError(f"dropout must be in [0, 1), got {dropout}")


def position_visibility(
    q_positions: Tensor,
    k_positions: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    window: int | None = None,
) -> Tensor:
    """(B, Nq, Nk) bool: which keys each query attends; all False for padding queries."""
    rel = q_positions[:, :, None].long() - k_positions[:, None, :].long()
    visible = (rel >= 0) & k_valid[:, None, :] & q_valid[:, :, None]
    if window is not None:
        visible &= rel < window
    return visible


def empty_attention_output(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Zeros of the output shape, for calls where no query sees any key.

    Built from sums over empty slices of q, k and v: exact zeros whatever the inputs hold
    (unlike `0 * x`, no NaN from an inf), yet in the graph, so a backward through it gives
    zero gradients instead of failing for want of a grad_fn.
    """
    b, h, nq, _ = q.shape
    from_q = q[..., :0].sum(-1, keepdim=True)
    from_kv = k[:, :, :0].sum((1, 2, 3)) + v[:, :, :0].sum((1, 2, 3))
    return q.new_zeros(b, h, nq, v.shape[3]) + from_q + from_kv[:, None, None, None]


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
    varlen_plan: Any = None,
) -> Tensor:
    """Softmax attention of q over the keys each query may see by original position.

    Args:
        q: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with H a multiple of Hkv (GQA).
        q_positions, k_positions: (B, Nq) / (B, Nk) integer original positions; keys need
            not be sorted.
        q_valid, k_valid: (B, Nq) / (B, Nk) bool, False on padding.
        scale: softmax scale applied to q·k.
        dropout: attention-probability dropout (applied whenever > 0: pass 0 in eval).
        window: if given, a query only sees keys fewer than `window` positions back.
        varlen_plan: a hint for the flash backend (see `varlen_runs`); ignored here.

    Returns:
        (B, H, Nq, D) in q's dtype; exactly 0 on rows that see no key (padding queries).
    """
    del varlen_plan  # only the flash backend uses it; accepted so every backend is callable alike
    check_position_attention_inputs(
        q, k, v, q_positions, k_positions, q_valid, k_valid, dropout, window
    )
    if q.shape[2] == 0 or k.shape[2] == 0:
        return empty_attention_output(q, k, v)
    visible = position_visibility(q_positions, k_positions, q_valid, k_valid, window)
    sees_any = visible.any(-1, keepdim=True)
    # A row that sees nothing would softmax over an empty set (NaN, and NaN gradients);
    # letting it see every key keeps it finite, and the `where` below zeroes it and stops
    # its gradient.
    mask = (visible | ~sees_any)[:, None]
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return torch.where(sees_any[:, None], out, out.new_zeros(()))

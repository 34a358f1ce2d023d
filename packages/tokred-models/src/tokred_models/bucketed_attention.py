"""SDPA over a padded batch whose samples keep very different numbers of tokens.

A reduced batch is ragged: under HiMix an understanding sample keeps its T text queries,
while a generation sample beside it keeps T + M. One padded SDPA call would make every
sample pay for the longest query set times the longest key set, which gives back much of
what the reduction saved. Samples are therefore grouped into buckets of similar cost
(queries x keys), and each bucket runs one SDPA call trimmed to its own longest sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["KeyPart", "bucket_rows", "bucketed_attention"]

# A sample joins the current bucket while its cost is at least this share of the bucket's
# largest; below that, padding it to the bucket's size would waste more than half its work.
MIN_FILL = 0.5


@dataclass
class KeyPart:
    """One padded block of keys/values: (B, Hkv, n, D) each, with token indices, validity
    (a prefix of each row) and the per-sample count."""

    k: torch.Tensor
    v: torch.Tensor
    tokens: torch.Tensor
    valid: torch.Tensor
    counts: list[int]


def bucket_rows(costs: list[int], min_fill: float = MIN_FILL) -> list[list[int]]:
    """Rows grouped by descending cost; a new bucket starts when a row's cost falls below
    `min_fill` of its bucket's first (largest) row."""
    order = sorted(range(len(costs)), key=lambda r: -costs[r])
    buckets: list[list[int]] = []
    for row in order:
        if buckets and costs[row] >= min_fill * costs[buckets[-1][0]]:
            buckets[-1].append(row)
        else:
            buckets.append([row])
    return buckets


def _mask(q_tok, q_valid, k_tok, k_valid, window):
    mask = k_tok[:, None, :] <= q_tok[:, :, None]
    if window is not None:
        mask &= (q_tok[:, :, None] - k_tok[:, None, :]) < window
    mask &= k_valid[:, None, :]
    # Padding query rows see every key so the softmax stays finite; their output is dropped.
    return mask | ~q_valid[:, :, None]


def bucketed_attention(
    q: torch.Tensor,
    q_tok: torch.Tensor,
    q_valid: torch.Tensor,
    q_counts: list[int],
    parts: list[KeyPart],
    *,
    scale: float,
    dropout: float,
    window: int | None,
) -> torch.Tensor:
    """q: (B, H, Nq, D) padded queries -> (B, H, Nq, D) attention output (pad rows arbitrary)."""
    bsz = q.shape[0]
    gqa = q.shape[1] != parts[0].k.shape[1]
    kv_counts = [sum(p.counts[r] for p in parts) for r in range(bsz)]
    buckets = bucket_rows([q_counts[r] * kv_counts[r] for r in range(bsz)])
    out = None
    for rows in buckets:
        nq = max(q_counts[r] for r in rows)
        if len(buckets) == 1:
            idx = None
            qb, qt, qv = q, q_tok, q_valid
            sel = [(p.k, p.v, p.tokens, p.valid) for p in parts]
        else:
            idx = torch.tensor(rows, device=q.device)
            qb = q.index_select(0, idx)[:, :, :nq]
            qt, qv = q_tok.index_select(0, idx)[:, :nq], q_valid.index_select(0, idx)[:, :nq]
            sel = []
            for p in parts:
                n = max(p.counts[r] for r in rows)
                sel.append(
                    (
                        p.k.index_select(0, idx)[:, :, :n],
                        p.v.index_select(0, idx)[:, :, :n],
                        p.tokens.index_select(0, idx)[:, :n],
                        p.valid.index_select(0, idx)[:, :n],
                    )
                )
        k = torch.cat([s[0] for s in sel], dim=2)
        v = torch.cat([s[1] for s in sel], dim=2)
        kt = torch.cat([s[2] for s in sel], dim=1)
        kv = torch.cat([s[3] for s in sel], dim=1)
        o = F.scaled_dot_product_attention(
            qb,
            k,
            v,
            attn_mask=_mask(qt, qv, kt, kv, window)[:, None],
            dropout_p=dropout,
            scale=scale,
            enable_gqa=gqa,
        )
        if idx is None:
            return o
        o = F.pad(o, (0, 0, 0, q.shape[2] - nq))
        out = o.new_zeros(q.shape) if out is None else out
        out = out.index_copy(0, idx, o)
    return out

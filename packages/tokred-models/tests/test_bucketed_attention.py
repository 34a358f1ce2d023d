"""Bucketed SDPA equals one padded SDPA call over the whole ragged batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokred_models.bucketed_attention import KeyPart, bucket_rows, bucketed_attention


def test_bucket_rows_splits_by_half_the_largest_cost():
    assert bucket_rows([100, 10, 60, 49, 5]) == [[0, 2], [3], [1, 4]]
    assert bucket_rows([7]) == [[0]]
    assert bucket_rows([3, 3, 3]) == [[0, 1, 2]]


def _padded(counts, heads, dim, seq, gen):
    n = max(counts) if counts else 0
    x = torch.randn(len(counts), heads, n, dim, generator=gen, dtype=torch.float64)
    valid = torch.arange(n)[None, :] < torch.tensor(counts)[:, None]
    tokens = torch.stack([torch.randperm(seq, generator=gen)[:n].sort().values for _ in counts])
    return x, tokens, valid


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucketed_equals_single_call_on_ragged_batches(seed, window):
    gen = torch.Generator().manual_seed(seed)
    heads, kv_heads, dim, seq = 4, 2, 8, 40
    q_counts = [30, 3, 17, 1, 29, 8]
    inj_counts = [0, 9, 2, 0, 5, 1]
    q, q_tok, q_valid = _padded(q_counts, heads, dim, seq, gen)
    ka, _, _ = _padded(q_counts, kv_heads, dim, seq, gen)
    va, _, _ = _padded(q_counts, kv_heads, dim, seq, gen)
    ki, ti, vi_valid = _padded(inj_counts, kv_heads, dim, seq, gen)
    vi, _, _ = _padded(inj_counts, kv_heads, dim, seq, gen)
    parts = [
        KeyPart(ka, va, q_tok, q_valid, q_counts),  # a query is also a key
        KeyPart(ki, vi, ti, vi_valid, inj_counts),
    ]
    assert len(bucket_rows([a * (a + b) for a, b in zip(q_counts, inj_counts, strict=True)])) > 1
    out = bucketed_attention(
        q, q_tok, q_valid, q_counts, parts, scale=dim**-0.5, dropout=0.0, window=window
    )
    # Reference: one call over the full padded batch with an explicit mask.
    k = torch.cat([ka, ki], 2)
    v = torch.cat([va, vi], 2)
    kt = torch.cat([q_tok, ti], 1)
    kv = torch.cat([q_valid, vi_valid], 1)
    mask = (kt[:, None, :] <= q_tok[:, :, None]) & kv[:, None, :]
    if window is not None:
        mask &= (q_tok[:, :, None] - kt[:, None, :]) < window
    mask |= ~q_valid[:, :, None]
    ref = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[:, None], scale=dim**-0.5, enable_gqa=True
    )
    keep = q_valid[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(out[keep], ref[keep])

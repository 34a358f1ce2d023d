"""Bucketed SDPA equals one padded SDPA call over the whole ragged batch, with INJECT
keys (masked per bucket) and without them (causal over the padded slots, no mask). The
reference takes the key parts side by side; the bucketed call takes them packed per
sample (each sample's INJECT keys right after its ACTIVE ones, layer_keys.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokred_models.bucketed_attention import (
    BUCKET_CALL_MACS,
    KeyPart,
    attention_buckets,
    bucket_rows,
    bucketed_attention,
    merge_buckets,
)


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


def _reference(q, q_tok, q_valid, ks, vs, kts, kvs, window, dim):
    """One call over the full padded batch with an explicit mask."""
    k, v, kt, kv = torch.cat(ks, 2), torch.cat(vs, 2), torch.cat(kts, 1), torch.cat(kvs, 1)
    mask = (kt[:, None, :] <= q_tok[:, :, None]) & kv[:, None, :]
    if window is not None:
        mask &= (q_tok[:, :, None] - kt[:, None, :]) < window
    mask |= ~q_valid[:, :, None]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[:, None], scale=dim**-0.5, enable_gqa=True
    )


def _packed(ks, vs, kts, kvs) -> KeyPart:
    """The parts packed per sample: each row's valid keys of every part, in part order,
    then padding (a stable sort that moves the valid slots first)."""
    k, v, kt, kv = torch.cat(ks, 2), torch.cat(vs, 2), torch.cat(kts, 1), torch.cat(kvs, 1)
    width = int(kv.sum(1).max())
    slots = torch.sort((~kv).int(), dim=1, stable=True).indices[:, :width]
    heads_slots = slots[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
    return KeyPart(
        k.gather(2, heads_slots), v.gather(2, heads_slots), kt.gather(1, slots), kv.gather(1, slots)
    )


def _parts(gen, q_counts, inj_counts, q_tok, q_valid, kv_heads, dim, seq):
    ka, _, _ = _padded(q_counts, kv_heads, dim, seq, gen)
    va, _, _ = _padded(q_counts, kv_heads, dim, seq, gen)
    ks, vs, kts, kvs = [ka], [va], [q_tok], [q_valid]  # a query is also a key
    if any(inj_counts):
        ki, ti, vi_valid = _padded(inj_counts, kv_heads, dim, seq, gen)
        vi, _, _ = _padded(inj_counts, kv_heads, dim, seq, gen)
        ks, vs, kts, kvs = ks + [ki], vs + [vi], kts + [ti], kvs + [vi_valid]
    return ks, vs, kts, kvs


# Bucket rows: scattered (copied out with index_select, copied back with index_copy) or
# consecutive ({0, 1}, {2}, ...: views of the batch, outputs joined by one concatenation).
# "tasks": two samples without INJECT keys (generation beside HiMix) in a bucket of their
# own, causal and unmasked, beside a masked bucket of two with INJECT keys.
ORDERS = {
    "scattered": ([30, 3, 17, 1, 29, 8], [0, 9, 2, 0, 5, 1]),
    "consecutive": ([30, 29, 3, 1, 17, 8], [0, 5, 4, 0, 2, 1]),
    "tasks": ([31, 6, 28, 5], [0, 20, 0, 23]),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("inject", [True, False])
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucketed_equals_single_call_on_ragged_batches(seed, window, inject, order):
    gen = torch.Generator().manual_seed(seed)
    heads, kv_heads, dim, seq = 4, 2, 8, 40
    q_counts, inj_counts = ORDERS[order]
    inj_counts = inj_counts if inject else [0] * len(q_counts)
    q, q_tok, q_valid = _padded(q_counts, heads, dim, seq, gen)
    ks, vs, kts, kvs = _parts(gen, q_counts, inj_counts, q_tok, q_valid, kv_heads, dim, seq)
    leaves = [q.requires_grad_(True), *(x.requires_grad_(True) for x in ks + vs)]
    keys = _packed(ks, vs, kts, kvs)
    k_counts = [a + i for a, i in zip(q_counts, inj_counts, strict=True)]
    buckets = attention_buckets(q_counts, k_counts, torch.device("cpu"))
    assert len(buckets.buckets) > 1
    assert buckets.tiled == (order == "consecutive")
    causal = [b.causal for b in buckets.buckets]
    assert all(causal) if not inject else (any(causal) and not all(causal))
    masks: dict = {}
    for _ in range(2):  # the second call takes its masks from the cache
        out = bucketed_attention(
            q,
            q_tok,
            q_valid,
            keys,
            buckets,
            scale=dim**-0.5,
            dropout=0.0,
            window=window,
            masks=masks,
        )
        ref = _reference(q, q_tok, q_valid, ks, vs, kts, kvs, window, dim)
        keep = q_valid[:, None, :, None].expand_as(ref)
        torch.testing.assert_close(out[keep], ref[keep])
    # Gradients to the queries and to every key/value part, through the buckets' views or
    # copies and the joined outputs, equal the single call's.
    weight = torch.randn(ref[keep].shape, generator=gen, dtype=ref.dtype)
    got = torch.autograd.grad((out[keep] * weight).sum(), leaves)
    want = torch.autograd.grad((ref[keep] * weight).sum(), leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert bool(masks) == (not all(causal) or window is not None)  # causal ones need none


def test_one_bucket_without_inject_runs_unmasked_and_pads_nothing():
    gen = torch.Generator().manual_seed(3)
    counts = [5, 5, 4]
    q, tok, valid = _padded(counts, 2, 4, 9, gen)
    k, _, _ = _padded(counts, 2, 4, 9, gen)
    buckets = attention_buckets(counts, counts, torch.device("cpu"))
    assert len(buckets.buckets) == 1 and buckets.buckets[0].whole
    out = bucketed_attention(
        q,
        tok,
        valid,
        KeyPart(k, k, tok, valid),
        buckets,
        scale=0.5,
        dropout=0.0,
        window=None,
    )
    ref = _reference(q, tok, valid, [k], [k], [tok], [valid], None, 4)  # scale 4**-0.5
    keep = valid[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(out[keep], ref[keep])


def test_buckets_merge_where_a_call_costs_more_than_the_padding_it_saves():
    # Two samples: 10 queries x 10 keys, 4 queries x 4 keys: split by cost (16 < 50),
    # joined they compute 2 x 10 x 10 = 200 pairs instead of 100 + 16, 84 more.
    q_counts, k_counts = [10, 4], [10, 4]
    assert bucket_rows([100, 16]) == [[0], [1]]
    assert merge_buckets([[0], [1]], q_counts, k_counts, call_pairs=84) == [[0, 1]]
    assert merge_buckets([[0], [1]], q_counts, k_counts, call_pairs=83) == [[0], [1]]
    # INJECT keys count in a sample's keys: 4 + 6 = 10 keys, so the join pads no key and
    # adds 2 x 10 x 10 - (100 + 40) = 60 pairs (side-by-side parts would have added 132).
    assert merge_buckets([[0], [1]], q_counts, [10, 10], call_pairs=60) == [[0, 1]]
    assert merge_buckets([[0], [1]], q_counts, [10, 10], call_pairs=59) == [[0], [1]]
    cpu = torch.device("cpu")
    call = BUCKET_CALL_MACS["cpu"]
    small = attention_buckets(q_counts, k_counts, cpu, pair_macs=call // 84)
    assert len(small.buckets) == 1 and small.buckets[0].whole
    assert small.buckets[0].num_queries == 10 and small.buckets[0].num_keys == 10
    large = attention_buckets(q_counts, k_counts, cpu, pair_macs=call // 83 + 1)
    assert [b.rows for b in large.buckets] == [None, None]  # tiled: spans, no indices
    assert [b.span for b in large.buckets] == [(0, 1), (1, 1)] and large.tiled
    assert len(attention_buckets(q_counts, k_counts, cpu).buckets) == 2  # no pair_macs: split
    with pytest.raises(ValueError, match="2 query counts but 1 key counts"):
        attention_buckets(q_counts, [3], cpu)


def test_merged_buckets_still_equal_the_reference():
    gen = torch.Generator().manual_seed(5)
    heads, kv_heads, dim, seq = 2, 1, 4, 20
    q_counts, inj = [15, 2, 9, 1], [0, 4, 3, 0]
    q, q_tok, q_valid = _padded(q_counts, heads, dim, seq, gen)
    ks, vs, kts, kvs = _parts(gen, q_counts, inj, q_tok, q_valid, kv_heads, dim, seq)
    k_counts = [a + i for a, i in zip(q_counts, inj, strict=True)]
    buckets = attention_buckets(q_counts, k_counts, torch.device("cpu"), pair_macs=1)
    assert len(buckets.buckets) == 1
    out = bucketed_attention(
        q,
        q_tok,
        q_valid,
        _packed(ks, vs, kts, kvs),
        buckets,
        scale=dim**-0.5,
        dropout=0.0,
        window=None,
    )
    ref = _reference(q, q_tok, q_valid, ks, vs, kts, kvs, None, dim)
    keep = q_valid[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(out[keep], ref[keep])

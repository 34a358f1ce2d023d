"""SDPA over a padded batch whose samples keep very different numbers of tokens.

A reduced batch is ragged: under HiMix an understanding sample keeps its T text queries,
while a generation sample beside it keeps T + M. One padded SDPA call would make every
sample pay for the longest query set times the longest key set, which gives back much of
what the reduction saved. Samples are therefore grouped into buckets of similar cost
(queries x keys), and each bucket runs one SDPA call trimmed to its own longest sample.
The keys come as one block whose row b holds sample b's keys in its first k_b slots
(layer_keys.py), so a bucket's keys are its rows of the block cut to its longest k_b:
a view for a whole-batch bucket, never a concatenation.

The buckets depend on the per-sample counts only, so they are built once per step on the
host (schedule.py); nothing here reads a size back from the device. Each sample's keys
begin with its queries' own tokens, in the queries' slots (layer_keys.py). So in a bucket
whose samples have no other keys (no INJECT part: a generation sample beside HiMix's
understanding ones, every sample under `none`) and without a window, the mask is plain
causal over the padded slots (both are position-ordered prefixes of each row), and SDPA runs
with `is_causal` and no mask: the fused kernels then apply on every device, and on the CPU
they skip the blocks above the diagonal, half the work, which a masked call computes.

Elsewhere, on a GPU, the bucket goes to the kernels' `position_attention` dispatcher (flash
varlen when flash-attn is installed, else FlexAttention once the dense mask would be large,
else the masked SDPA reference; TOKRED_KERNELS_IMPL names one). On the CPU the masked SDPA runs here directly, its mask
cached across the layers that share it: FlexAttention has no CPU backward, and the
dispatcher's reference would rebuild the mask in every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokred_kernels import build_varlen_plan, select_implementation

from .bucket_tiles import join_tiles, tile_views

__all__ = [
    "KeyPart",
    "AttentionBuckets",
    "BUCKET_CALL_MACS",
    "attention_buckets",
    "bucket_rows",
    "bucketed_attention",
    "merge_buckets",
]

# A sample joins the current bucket while its cost is at least this share of the bucket's
# largest; below that, padding it to the bucket's size would waste more than half its work.
MIN_FILL = 0.5

#: What one more bucket costs beyond its arithmetic (its SDPA call, the row picks, the
#: output placement, and their backward), in multiply-adds of forward attention. Adjacent
#: buckets are merged when the padding the merge adds costs less than this: on a small
#: model a bucket's calls cost more than the attention it saves. CPU: measured on the
#: demo's model (2-core EPYC, 1 thread), where one bucket per layer instead of two took
#: the reduced step from 1.10x to 1.04x the baseline's, about 1.7 ms per bucket and step
#: (fwd+bwd), which is ~2^24 forward multiply-adds of attention there; the compute-bound
#: shape's split saves ~2^28.5 and stays. CUDA: measured on an H200 (bf16, llama-1b, the
#: mixed HiMix + HMGen batch of 4 x 704 tokens, two rounds side by side in one process),
#: where the reduced step is bound by its kernel launches (docs/gpu-check-h200.md): at
#: 2^28 the batch kept two buckets per layer, 1.94x the plain step; at 2^31, one bucket,
#: 1.60x (2^34 read the same). Merging there adds ~2^30.6 multiply-adds of padding.
BUCKET_CALL_MACS = {"cpu": 2**24, "cuda": 2**31}


@dataclass
class KeyPart:
    """The keys/values of a batch as one padded block: (B, Hkv, n, D) each, with token
    indices and validity (a prefix of each row)."""

    k: torch.Tensor
    v: torch.Tensor
    tokens: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class Bucket:
    rows: torch.Tensor | None
    """Device indices of the bucket's samples; None when one bucket holds the whole batch
    or the buckets tile it (every bucket a span: views in, one join out)."""
    span: tuple[int, int] | None
    """(first, count) when the bucket's samples are consecutive rows: its inputs are then
    views of the batch's (narrow) rather than copies (index_select)."""
    num_queries: int
    """The bucket's longest query set: its padded query length."""
    num_keys: int
    """The bucket's longest key set: its padded key length."""
    causal: bool = False
    """Every sample's keys are its queries (no INJECT keys): causal over the slots."""

    @property
    def whole(self) -> bool:
        """The one bucket of the whole batch."""
        return self.rows is None and self.span is None


@dataclass(frozen=True)
class AttentionBuckets:
    buckets: tuple[Bucket, ...]
    padded_queries: int
    """The batch's padded query length (the longest sample)."""

    @property
    def tiled(self) -> bool:
        """Every bucket is a span and they follow each other (attention_buckets orders
        them so): the outputs join by one concatenation instead of a copy per bucket."""
        return all(b.span is not None for b in self.buckets)


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


def _padded_pairs(rows: list[int], q_counts: list[int], k_counts: list[int]) -> int:
    """Query-key pairs one SDPA call over `rows` computes: padded to its longest sample."""
    return len(rows) * max(q_counts[r] for r in rows) * max(k_counts[r] for r in rows)


def merge_buckets(
    groups: list[list[int]],
    q_counts: list[int],
    k_counts: list[int],
    call_pairs: float,
) -> list[list[int]]:
    """Adjacent buckets joined while the joined call computes at most `call_pairs` more
    query-key pairs than the two separate ones: the cost of a call, in pairs."""
    merged = groups[:1]
    for rows in groups[1:]:
        joined = merged[-1] + rows
        extra = _padded_pairs(joined, q_counts, k_counts) - sum(
            _padded_pairs(g, q_counts, k_counts) for g in (merged[-1], rows)
        )
        if extra <= call_pairs:
            merged[-1] = joined
        else:
            merged.append(rows)
    return merged


def attention_buckets(
    q_counts: list[int],
    k_counts: list[int],
    device: torch.device,
    pair_macs: int = 0,
) -> AttentionBuckets:
    """The buckets of a batch from its per-sample query and key counts.

    pair_macs: multiply-adds of one query-key pair (heads x head_dim); with it, buckets
    whose separate calls cost more than the padding they save are merged
    (BUCKET_CALL_MACS). 0 keeps the split by cost alone."""
    if len(k_counts) != len(q_counts):
        raise ValueError(f"{len(q_counts)} query counts but {len(k_counts)} key counts")
    groups = bucket_rows([q * k for q, k in zip(q_counts, k_counts, strict=True)])
    if pair_macs > 0 and len(groups) > 1:
        call = BUCKET_CALL_MACS.get(torch.device(device).type, BUCKET_CALL_MACS["cuda"])
        groups = merge_buckets(groups, q_counts, k_counts, call / pair_macs)
    whole = len(groups) == 1
    groups = [sorted(rows) for rows in groups]
    spans = [
        (rows[0], len(rows)) if rows[-1] - rows[0] == len(rows) - 1 else None for rows in groups
    ]
    tiled = all(spans)
    if tiled:  # in row order, so that the outputs concatenate in the batch's order
        groups, spans = zip(
            *sorted(zip(groups, spans, strict=True), key=lambda g: g[0][0]), strict=True
        )
    buckets = tuple(
        Bucket(
            None if whole or tiled else torch.tensor(rows, device=device),
            None if whole else span,
            max(q_counts[r] for r in rows),
            max(k_counts[r] for r in rows),
            all(q_counts[r] == k_counts[r] for r in rows),
        )
        for rows, span in zip(groups, spans, strict=True)
    )
    return AttentionBuckets(buckets, max(q_counts, default=0))


def _mask(q_tok, q_valid, k_tok, k_valid, window):
    mask = k_tok[:, None, :] <= q_tok[:, :, None]
    if window is not None:
        mask &= (q_tok[:, :, None] - k_tok[:, None, :]) < window
    mask &= k_valid[:, None, :]
    # Padding query rows see every key so the softmax stays finite; their output is dropped.
    return (mask | ~q_valid[:, :, None])[:, None]  # (B, 1, Nq, Nk): one mask for all heads


def _additive_mask(q_tok, q_valid, k_tok, k_valid, window, dtype):
    """_mask as the additive float mask that SDPA turns a boolean one into on every call,
    forward and backward: made once here, for every layer of the pattern."""
    allowed = _mask(q_tok, q_valid, k_tok, k_valid, window)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )


def _bucket_inputs(bucket: Bucket, q, q_tok, q_valid, keys: KeyPart):
    """The bucket's rows of the queries and keys, trimmed to its own longest sample (a
    view where the bucket holds the whole batch)."""
    rows, span = bucket.rows, bucket.span
    if bucket.whole:
        pick = lambda t, n, dim: t.narrow(dim, 0, n)  # noqa: E731
    elif span is not None:
        pick = lambda t, n, dim: t.narrow(0, *span).narrow(dim, 0, n)  # noqa: E731
    else:
        pick = lambda t, n, dim: t.index_select(0, rows).narrow(dim, 0, n)  # noqa: E731
    nq, nk = bucket.num_queries, bucket.num_keys
    return (
        pick(q, nq, 2),
        pick(q_tok, nq, 1),
        pick(q_valid, nq, 1),
        pick(keys.k, nk, 2),
        pick(keys.v, nk, 2),
        pick(keys.tokens, nk, 1),
        pick(keys.valid, nk, 1),
    )


def _tiled_inputs(buckets: AttentionBuckets, q, q_tok, q_valid, keys: KeyPart):
    """_bucket_inputs of every bucket of a tiled batch, as views whose gradients each
    input receives in one write (bucket_tiles.py)."""
    spans = [b.span for b in buckets.buckets]
    nq = [b.num_queries for b in buckets.buckets]
    nk = [b.num_keys for b in buckets.buckets]
    parts = (
        tile_views(q, spans, nq, 2),
        tile_views(q_tok, spans, nq, 1),
        tile_views(q_valid, spans, nq, 1),
        tile_views(keys.k, spans, nk, 2),
        tile_views(keys.v, spans, nk, 2),
        tile_views(keys.tokens, spans, nk, 1),
        tile_views(keys.valid, spans, nk, 1),
    )
    return zip(*parts, strict=True)


def bucketed_attention(
    q: torch.Tensor,
    q_tok: torch.Tensor,
    q_valid: torch.Tensor,
    keys: KeyPart,
    buckets: AttentionBuckets,
    *,
    scale: float,
    dropout: float,
    window: int | None,
    masks: dict | None = None,
) -> torch.Tensor:
    """q: (B, H, Nq, D) padded queries -> (B, H, Nq, D) attention output (pad rows arbitrary).

    `keys` hold each sample's queries' own tokens first, in their slots (the module
    docstring): a causal bucket runs unmasked. `masks` caches each bucket's mask across the
    layers that share these buckets (they depend on positions only)."""
    gqa = q.shape[1] != keys.k.shape[1]
    cache = masks if masks is not None else {}
    if buckets.tiled:
        inputs = _tiled_inputs(buckets, q, q_tok, q_valid, keys)
    else:
        inputs = (_bucket_inputs(b, q, q_tok, q_valid, keys) for b in buckets.buckets)
    outs = []
    for i, (bucket, picked) in enumerate(zip(buckets.buckets, inputs, strict=True)):
        qb, qt, qv, k, v, kt, kv = picked
        if bucket.causal and window is None:
            o = F.scaled_dot_product_attention(
                qb, k, v, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=gqa
            )
        elif q.is_cuda:
            o = _dispatched(qb, k, v, qt, kt, qv, kv, scale, dropout, window, cache, i)
        else:
            mask = _cached(
                cache, (i, window, q.dtype), _additive_mask, qt, qv, kt, kv, window, q.dtype
            )
            o = F.scaled_dot_product_attention(
                qb, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa
            )
        if bucket.whole:
            return o if o.shape[2] == q.shape[2] else F.pad(o, (0, 0, 0, q.shape[2] - o.shape[2]))
        outs.append(o)
    if buckets.tiled:
        return join_tiles(outs, [b.span for b in buckets.buckets], q.shape[2], 2)
    out = outs[0].new_zeros(q.shape)
    for bucket, o in zip(buckets.buckets, outs, strict=True):
        out = out.index_copy(0, bucket.rows, F.pad(o, (0, 0, 0, q.shape[2] - o.shape[2])))
    return out


def _cached(cache: dict, key, build, *args):
    """cache[key], built as build(*args) on first use: what depends on positions only is
    built once per step for all the layers that share a pattern."""
    if key not in cache:
        cache[key] = build(*args)
    return cache[key]


def _dispatched(q, k, v, q_tok, k_tok, q_valid, k_valid, scale, dropout, window, cache, i):
    """One bucket through the kernels' position_attention backends (GPU)."""
    inputs = dict(
        q=q,
        k=k,
        v=v,
        q_positions=q_tok,
        k_positions=k_tok,
        q_valid=q_valid,
        k_valid=k_valid,
        scale=scale,
        dropout=dropout,
        window=window,
    )
    impl = select_implementation("position_attention", **inputs)
    if impl.name == "flash":
        # The varlen plan reads its sizes back once; positions are the same in every layer
        # of the pattern, so it is built once per step.
        key = (i, window, "varlen")
        inputs["varlen_plan"] = _cached(
            cache, key, build_varlen_plan, q_tok, k_tok, q_valid, k_valid
        )
    return impl.ops["position_attention"](**inputs)

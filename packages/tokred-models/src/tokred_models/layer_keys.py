"""The keys and values of one reduced layer's attention, as one padded block.

A layer attends from its ACTIVE tokens to its ACTIVE tokens and (HiMix) its INJECT
tokens. Their keys/values are computed together, as one stack of packed rows (ACTIVE rows,
then INJECT rows: reduced_layer.py), and placed with one move into a (B, W, Hkv, D) block
whose row b holds sample b's a_b ACTIVE keys in slots [0, a_b) and its i_b INJECT keys
right after them, in [a_b, a_b + i_b); W is the longest a_b + i_b.

Why packed per sample and not the ACTIVE part padded, then the INJECT part padded: in a
mixed batch the longest ACTIVE set is a generation sample's (all its tokens) and the
longest INJECT set an understanding sample's (its image, under HiMix), and no sample has
both. Side-by-side parts would make every sample pay for both maxima: on the demo's
batches 67 key slots where no sample has more than 49. Attention masks by the tokens'
own positions (tokens, valid), so the order of a sample's keys within its row is free.

Where the layout comes from positions only (the slots, token indices, validity), it is
built once per step for all the layers of a pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokred_kernels import place_rows

from .bucketed_attention import KeyPart

__all__ = ["KeyLayout", "LayerKeys", "key_layout"]


@dataclass(frozen=True)
class KeyLayout:
    slots: torch.Tensor
    """(n_active + n_inject,) row of each stacked key row in the flattened (B * W) block."""
    width: int
    """W: the longest key set of a sample."""
    tokens: torch.Tensor
    """(B, W) sequence index of each slot (pad slots 0)."""
    valid: torch.Tensor
    """(B, W) True for real keys (a prefix of each row)."""
    query_tokens: torch.Tensor
    """(B, A) sequence index of each ACTIVE padded slot: the queries' (pad slots 0)."""


def _sample_rank(index) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample and the rank within it of each packed row of a TokenIndex."""
    sample = index.padded_slots.div(max(index.max_count, 1), rounding_mode="floor")
    return sample, index.padded_slots - sample * index.max_count


def key_layout(pattern, seq: int) -> KeyLayout:
    """The block layout of a pattern's key sets, cached in the pattern (positions only)."""
    cached = pattern.cache.get("key_layout")
    if cached is not None:
        return cached
    active, inject = pattern.active.index, pattern.inject.index
    has_inject = bool(pattern.inject.total)
    width = max(pattern.key_counts, default=0)
    sample, rank = _sample_rank(active)
    slots, key_counts, indices = sample * width + rank, active.counts, active.indices
    if has_inject:  # right after the sample's own ACTIVE keys
        sample, rank = _sample_rank(inject)
        slots = torch.cat([slots, sample * width + active.counts.index_select(0, sample) + rank])
        key_counts = active.counts + inject.counts
        indices = torch.cat([indices, inject.indices])
    tokens = torch.zeros(active.batch_size * width, dtype=torch.long, device=slots.device)
    tokens.index_copy_(0, slots, indices % max(seq, 1))
    layout = KeyLayout(
        slots,
        width,
        tokens.view(active.batch_size, width),
        torch.arange(width, device=slots.device)[None, :] < key_counts[:, None],
        active.padded_indices % max(seq, 1),
    )
    pattern.cache["key_layout"] = layout
    return layout


class LayerKeys:
    """One layer's keys/values: the block (B, Hkv, W, D) (see the module docstring)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pattern, seq: int) -> None:
        """k, v: (n_active + n_inject, Hkv, D), the stacked rows of the pattern's key sets."""
        self.layout = key_layout(pattern, seq)
        bsz, width = self.layout.tokens.shape
        rows = bsz * width
        in_order = pattern.in_order

        def block(x: torch.Tensor) -> torch.Tensor:
            if in_order:  # every token, in order: the stacked rows are the block already
                return x.view(bsz, width, *x.shape[1:])
            return place_rows(x, self.layout.slots, rows).view(bsz, width, *x.shape[1:])

        self.k = block(k).transpose(1, 2)  # (B, Hkv, W, D)
        self.v = block(v).transpose(1, 2)

    @property
    def query_tokens(self) -> torch.Tensor:
        """(B, A) sequence index of each ACTIVE slot: the queries'."""
        return self.layout.query_tokens

    @property
    def block(self) -> KeyPart:
        """The keys as the attention takes them."""
        return KeyPart(self.k, self.v, self.layout.tokens, self.layout.valid)

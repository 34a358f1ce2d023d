"""The keys and values of one reduced layer's attention, as one padded block.

A layer attends from its ACTIVE tokens to its ACTIVE tokens and (HiMix) its INJECT
tokens. Their keys/values are computed together, as one stack of packed rows (ACTIVE rows,
then INJECT rows: reduced_layer.py), and placed with one move into a (B, W, Hkv, D) block
whose row b holds sample b's ACTIVE keys in slots [0, a_b) and its INJECT keys in slots
[A, A + i_b), A and I being the batch's longest counts and W = A + I. That block is what a
whole-batch attention bucket reads as it is; a bucket of some samples reads each part as a
view of it (bucketed_attention.py). Where the layout comes from positions only (the slots,
token indices, validity), it is built once per step for all the layers of a pattern.
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
    widths: tuple[int, ...]
    """The padded width of each part (ACTIVE, then INJECT if any)."""
    tokens: torch.Tensor
    """(B, W) sequence index of each slot (pad slots 0)."""
    valid: torch.Tensor
    """(B, W) True for real keys (a prefix of each part)."""


def key_layout(pattern, seq: int) -> KeyLayout:
    """The block layout of a pattern's key sets, cached in the pattern (positions only)."""
    cached = pattern.cache.get("key_layout")
    if cached is not None:
        return cached
    sets = [s.index for s in pattern.key_sets]
    widths = tuple(idx.max_count for idx in sets)
    width = sum(widths)
    slots, offset = [], 0
    for idx in sets:
        # padded_slots = sample * max_count + rank -> sample * W + offset + rank.
        sample = idx.padded_slots.div(max(idx.max_count, 1), rounding_mode="floor")
        slots.append(idx.padded_slots + sample * (width - idx.max_count) + offset)
        offset += idx.max_count
    layout = KeyLayout(
        torch.cat(slots) if len(slots) > 1 else slots[0],
        widths,
        torch.cat([idx.padded_indices % max(seq, 1) for idx in sets], dim=1),
        torch.cat([idx.padded_valid for idx in sets], dim=1),
    )
    pattern.cache["key_layout"] = layout
    return layout


class LayerKeys:
    """One layer's keys/values: the block (B, Hkv, W, D) and its parts as views."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pattern, seq: int) -> None:
        """k, v: (n_active + n_inject, Hkv, D), the stacked rows of the pattern's key sets."""
        self.layout = key_layout(pattern, seq)
        bsz, width = self.layout.tokens.shape
        rows = bsz * width

        def block(x: torch.Tensor) -> torch.Tensor:
            return place_rows(x, self.layout.slots, rows).view(bsz, width, *x.shape[1:])

        self.k = block(k).transpose(1, 2)  # (B, Hkv, W, D)
        self.v = block(v).transpose(1, 2)

    @property
    def query_tokens(self) -> torch.Tensor:
        """(B, A) sequence index of each ACTIVE slot: the queries' (they are the ACTIVE
        part, in the same padded order)."""
        return self.layout.tokens[:, : self.layout.widths[0]]

    @property
    def whole(self) -> KeyPart:
        """All the keys as one part (its parts side by side)."""
        return KeyPart(self.k, self.v, self.layout.tokens, self.layout.valid)

    def parts(self) -> list[KeyPart]:
        """Each key set as its own part: views of the block."""
        parts, start = [], 0
        for width in self.layout.widths:
            cut = slice(start, start + width)
            parts.append(
                KeyPart(
                    self.k[:, :, cut],
                    self.v[:, :, cut],
                    self.layout.tokens[:, cut],
                    self.layout.valid[:, cut],
                )
            )
            start += width
        return parts

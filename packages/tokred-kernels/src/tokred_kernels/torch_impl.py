"""The plain-PyTorch implementation: runs everywhere, and is the oracle for faster ones."""

from __future__ import annotations

from .gather_scatter import (
    gather_packed,
    pack_to_padded,
    padded_to_packed,
    place_rows,
    scatter_packed,
    token_index,
)
from .implementation import Implementation
from .importance import attention_importance, topk_per_sample
from .position_attention import position_attention
from .segment_mass import segment_attention_mass, segment_mass_by_query_segment

__all__ = ["TORCH_IMPL"]

TORCH_IMPL = Implementation(
    name="torch",
    ops={
        "segment_attention_mass": segment_attention_mass,
        "segment_mass_by_query_segment": segment_mass_by_query_segment,
        "attention_importance": attention_importance,
        "topk_per_sample": topk_per_sample,
        "token_index": token_index,
        "gather_packed": gather_packed,
        "scatter_packed": scatter_packed,
        "pack_to_padded": pack_to_padded,
        "padded_to_packed": padded_to_packed,
        "place_rows": place_rows,
        "position_attention": position_attention,
    },
)

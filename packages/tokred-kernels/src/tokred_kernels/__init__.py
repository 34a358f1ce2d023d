"""tokred_kernels: how to compute token reduction fast.

Reference torch ops (also the test oracles) for the attention mass per segment, attention
importance scores with per-sample top-k, and per-sample token gather/scatter, all routed
through an import-safe dispatcher (TOKRED_KERNELS_IMPL=auto|torch|triton). Depends on torch
only; importing it never imports triton.
"""

from __future__ import annotations

from .dispatch import (
    IMPL_ENV_VAR,
    implementations,
    register_implementation,
    requested_implementation,
    select_implementation,
)
from .errors import KernelError
from .gather_scatter import TokenIndex
from .implementation import Implementation
from .ops import (
    attention_importance,
    gather_packed,
    pack_to_padded,
    padded_to_packed,
    scatter_packed,
    segment_attention_mass,
    segment_mass_by_query_segment,
    token_index,
    topk_per_sample,
)

__all__ = [
    "IMPL_ENV_VAR",
    "Implementation",
    "KernelError",
    "TokenIndex",
    "attention_importance",
    "gather_packed",
    "implementations",
    "pack_to_padded",
    "padded_to_packed",
    "register_implementation",
    "requested_implementation",
    "scatter_packed",
    "segment_attention_mass",
    "segment_mass_by_query_segment",
    "select_implementation",
    "token_index",
    "topk_per_sample",
]

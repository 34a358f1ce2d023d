"""tokred_kernels: how to compute token reduction fast.

Reference torch ops (also the test oracles) for the attention mass per segment, attention
importance scores with per-sample top-k, per-sample token gather/scatter and attention
masked by original positions, all routed through an import-safe dispatcher
(TOKRED_KERNELS_IMPL=auto|flash|flex|triton|torch). Depends on torch only; importing it
never imports triton or flash_attn.
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
    place_rows,
    position_attention,
    scatter_packed,
    segment_attention_mass,
    segment_mass_by_query_segment,
    token_index,
    topk_per_sample,
)
from .varlen_runs import VarlenPlan, build_varlen_plan

__all__ = [
    "IMPL_ENV_VAR",
    "Implementation",
    "KernelError",
    "TokenIndex",
    "VarlenPlan",
    "attention_importance",
    "build_varlen_plan",
    "gather_packed",
    "implementations",
    "pack_to_padded",
    "place_rows",
    "padded_to_packed",
    "position_attention",
    "register_implementation",
    "requested_implementation",
    "scatter_packed",
    "segment_attention_mass",
    "segment_mass_by_query_segment",
    "select_implementation",
    "token_index",
    "topk_per_sample",
]

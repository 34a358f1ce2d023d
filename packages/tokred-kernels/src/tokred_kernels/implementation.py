"""What a kernel implementation is: a name, its ops, and why it cannot run on given inputs.

Borrowed from xformers' dispatch: instead of a boolean "available", every implementation
returns the list of reasons it cannot serve a call (no CUDA tensors, library missing, op
not written yet). The dispatcher can then pick the first one with no reasons, and an
explicit choice that cannot run fails with every reason instead of a vague error. A
backend may also give reasons `auto` should pass it over although it could run (it would
be slower than a later one on these inputs); naming it explicitly still runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Implementation", "OP_NAMES"]

OP_NAMES: tuple[str, ...] = (
    "segment_attention_mass",
    "segment_mass_by_query_segment",
    "attention_importance",
    "topk_per_sample",
    "token_index",
    "gather_packed",
    "scatter_packed",
    "pack_to_padded",
    "padded_to_packed",
    "place_rows",
    "position_attention",
)
"""Every op the dispatcher routes; each implementation may provide any subset."""


def _no_reasons(op: str, inputs: Mapping[str, Any]) -> list[str]:
    return []


@dataclass(frozen=True)
class Implementation:
    """One backend of the kernels (e.g. plain torch, Triton)."""

    name: str
    """Value of TOKRED_KERNELS_IMPL that selects it."""
    ops: Mapping[str, Callable[..., Any]]
    """op name -> function taking the op's keyword arguments."""
    check: Callable[[str, Mapping[str, Any]], list[str]] = field(default=_no_reasons)
    """Backend-specific reasons (beyond a missing op) it cannot run `op` on `inputs`."""
    auto_skip: Callable[[str, Mapping[str, Any]], list[str]] = field(default=_no_reasons)
    """Reasons `auto` passes it over although it could run (a later one is faster there,
    e.g. an unfused fallback path); an explicit choice still runs it."""

    def not_supported_reasons(self, op: str, **inputs: Any) -> list[str]:
        """Every reason this implementation cannot run `op` on `inputs`; empty if it can."""
        reasons = []
        if op not in self.ops:
            reasons.append(f"op {op!r} is not implemented yet by {self.name!r}")
        reasons.extend(self.check(op, inputs))
        return reasons

    def auto_skip_reasons(self, op: str, **inputs: Any) -> list[str]:
        """Why `auto` should prefer a later implementation for this call; empty if none."""
        return list(self.auto_skip(op, inputs))

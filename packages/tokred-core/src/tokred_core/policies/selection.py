"""Shared pieces of the attention-importance policies (FastV, PyramidDrop)."""

from __future__ import annotations

import torch

from ..errors import TokredError
from ..layout import Segment, TokenLayout

__all__ = ["importance_queries", "QUERY_MODES"]

QUERY_MODES = ("last_instruction", "prompt")


def importance_queries(layout: TokenLayout, mode: str) -> torch.Tensor:
    """(B, N) bool: the queries whose attention ranks image tokens.

    Only prompt tokens (system and instruction) are used, never the output, so the choice
    depends on the prompt alone and every loss position still sees a causal model.
    """
    if mode == "prompt":
        return layout.prompt_mask()
    if mode == "last_instruction":
        instr = layout.segments == Segment.INSTRUCTION
        idx = torch.arange(layout.seq_len, device=layout.device).expand_as(instr)
        last = torch.where(instr, idx, torch.full_like(idx, -1)).max(-1).values
        missing = last < 0
        if bool(missing.any()):
            b = layout.sample_name(int(torch.nonzero(missing)[0, 0]))
            raise TokredError(f"query='last_instruction' but sample {b} has no instruction tokens")
        return idx == last[:, None]
    raise TokredError(f"query={mode!r} must be one of {', '.join(QUERY_MODES)}")

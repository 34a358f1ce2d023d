"""The one check every image tokenizer runs on codes it is handed back."""

from __future__ import annotations

import torch
from tokred_core import TokredError

__all__ = ["check_code_rows"]


def check_code_rows(codes: torch.Tensor, num_tokens: int, codebook_size: int) -> torch.Tensor:
    """Integer codes, (T,) or (B, T), -> (B, T) with T == num_tokens and every value a code
    of the codebook; a clear error naming the shape or the values otherwise."""
    if codes.dim() == 1:
        codes = codes[None]
    if codes.dim() != 2 or codes.shape[1] != num_tokens:
        raise TokredError(f"codes of shape {tuple(codes.shape)}: expected (batch, {num_tokens})")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise TokredError(
            f"codes hold values outside 0..{codebook_size - 1} "
            f"(min {int(codes.min())}, max {int(codes.max())})"
        )
    return codes

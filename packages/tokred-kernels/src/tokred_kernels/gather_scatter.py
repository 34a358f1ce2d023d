"""Per-sample token subsets with autograd: full (B, N, ...) <-> packed (total, ...) <-> padded.

A reduced decoder layer computes only the tokens that have work in it (DESIGN.md, data
flow): gather them out of the full-length residual stream, run attention / FFN on the
packed (varlen) or padded batch, and scatter the results back in place. Samples select
different numbers of tokens, so the selection is described once by a `TokenIndex` and
reused by every move.

Like flash-attention's `bert_padding.py`, the moves are small autograd Functions. The
selected rows are unique, so every backward is a plain index_select / index_copy: no
`index_add` / `index_put(accumulate=True)` (atomics on CUDA, nondeterministic), and the
backward of each Function is itself built from these Functions, so double backward works.
All moves cost O(moved rows) work and memory; nothing loops over tokens in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from .errors import KernelError

__all__ = [
    "TokenIndex",
    "token_index",
    "gather_packed",
    "scatter_packed",
    "pack_to_padded",
    "padded_to_packed",
    "place_rows",
]


@dataclass(frozen=True)
class TokenIndex:
    """Where the selected tokens of a (B, N) mask live in the full, packed and padded forms.

    Packed order is sample-major, then position ascending (the order of `mask.nonzero()`).
    """

    indices: Tensor
    """(total,) long flat indices b * N + n of the selected tokens into the (B * N) rows."""
    counts: Tensor
    """(B,) long, selected tokens per sample."""
    cu_seqlens: Tensor
    """(B + 1,) int32 cumulative counts, the varlen convention of flash-attention (the
    packed rows' sample boundaries unless the index was `permuted`)."""
    max_count: int
    """Largest count (0 for an empty selection): the padded length."""
    padded_indices: Tensor
    """(B, max_count) long flat indices into (B * N); pad slots hold 0, mask them with
    `padded_valid`."""
    padded_valid: Tensor
    """(B, max_count) bool, True for real tokens (a prefix of each row)."""
    padded_slots: Tensor
    """(total,) long: row of each packed token in the flattened (B * max_count) padded form."""
    batch_size: int
    seq_len: int
    identity: bool = False
    """Every token is selected, packed in their own order (host-known): packed, padded and
    full forms are then one layout, and every move below is a view instead of a copy."""

    @property
    def total(self) -> int:
        """Number of selected tokens over the whole batch."""
        return self.indices.shape[0]

    @property
    def batch_ids(self) -> Tensor:
        """(total,) sample of each packed token."""
        return self.indices.div(max(self.seq_len, 1), rounding_mode="floor")

    @property
    def positions(self) -> Tensor:
        """(total,) index within its sample (column of the mask) of each packed token."""
        return self.indices.remainder(max(self.seq_len, 1))

    def permuted(self, order: Tensor) -> TokenIndex:
        """The same selection with its packed rows in another order: packed row i becomes
        old packed row order[i]. The full and padded forms do not change, so every move
        stays consistent; only `cu_seqlens` no longer delimits samples in the packed form
        (it still counts them). Used to put rows of one projection group side by side."""
        return replace(
            self,
            indices=self.indices.index_select(0, order),
            padded_slots=self.padded_slots.index_select(0, order),
            identity=False,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenIndex:
        """The same index with its tensors on `device`."""
        move = {
            name: getattr(self, name).to(device, non_blocking=non_blocking)
            for name in (
                "indices",
                "counts",
                "cu_seqlens",
                "padded_indices",
                "padded_valid",
                "padded_slots",
            )
        }
        return replace(self, **move)


def token_index(mask: Tensor) -> TokenIndex:
    """Build the `TokenIndex` of a (B, N) bool selection mask (one host sync for the sizes)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise KernelError(
            f"mask must be a (B, N) bool tensor, got "
            f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
        )
    b, n = mask.shape
    dev = mask.device
    indices = mask.reshape(-1).nonzero().squeeze(1)
    counts = mask.sum(dim=1)
    max_count = int(counts.max().item()) if b > 0 and n > 0 else 0
    rank = (mask.cumsum(dim=1) - 1).reshape(-1).index_select(0, indices)
    batch = indices.div(max(n, 1), rounding_mode="floor")
    padded_slots = batch * max_count + rank
    padded_indices = torch.zeros(b * max_count, dtype=torch.long, device=dev)
    padded_indices.index_copy_(0, padded_slots, indices)
    cu_seqlens = torch.zeros(b + 1, dtype=torch.int32, device=dev)
    cu_seqlens[1:] = counts.cumsum(dim=0)
    return TokenIndex(
        indices=indices,
        counts=counts,
        cu_seqlens=cu_seqlens,
        max_count=max_count,
        padded_indices=padded_indices.view(b, max_count),
        padded_valid=torch.arange(max_count, device=dev)[None, :] < counts[:, None],
        padded_slots=padded_slots,
        batch_size=b,
        seq_len=n,
        identity=indices.shape[0] == b * n,  # every token, so indices == arange(B * N)
    )


class _GatherRows(Function):
    """out = src[index] for unique `index`; backward places the gradient rows into zeros."""

    @staticmethod
    def forward(ctx: Any, src: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = src.shape[0]
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        (index,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return _PlaceRows.apply(grad, index, ctx.num_rows), None


class _PlaceRows(Function):
    """out = zeros(num_rows, ...) with out[index] = src, for unique `index`."""

    @staticmethod
    def forward(ctx: Any, src: Tensor, index: Tensor, num_rows: int) -> Tensor:
        ctx.save_for_backward(index)
        # As many unique slots as rows write every row: the zeros would all be overwritten
        # (a dense block, e.g. a batch whose samples keep equal counts). Sizes are host ints.
        shape = (num_rows, *src.shape[1:])
        out = src.new_empty(shape) if index.shape[0] == num_rows else src.new_zeros(shape)
        return out.index_copy_(0, index, src)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        (index,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _GatherRows.apply(grad, index), None, None


class _ReplaceRows(Function):
    """out = base with out[index] = src, for unique `index` (base itself is not modified)."""

    @staticmethod
    def forward(ctx: Any, base: Tensor, src: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return base.index_copy(0, index, src)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (index,) = ctx.saved_tensors
        grad_base = grad_src = None
        if ctx.needs_input_grad[0]:
            # Replaced rows of base do not reach the output. index_fill is differentiable,
            # so this stays correct under double backward.
            grad_base = grad.index_fill(0, index, 0)
        if ctx.needs_input_grad[1]:
            grad_src = _GatherRows.apply(grad, index)
        return grad_base, grad_src, None


def _check_full(name: str, x: Tensor, idx: TokenIndex) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise KernelError(f"{name} must be a (B, N, ...) tensor, got {type(x).__name__}")
    if tuple(x.shape[:2]) != (idx.batch_size, idx.seq_len):
        raise KernelError(
            f"{name} has shape {tuple(x.shape)} but the TokenIndex was built for "
            f"(B, N) = {(idx.batch_size, idx.seq_len)}"
        )
    if x.device != idx.indices.device:
        raise KernelError(f"{name} is on {x.device} but the TokenIndex is on {idx.indices.device}")


def gather_packed(x: Tensor, idx: TokenIndex) -> Tensor:
    """(B, N, ...) -> (total, ...): the selected rows, sample-major."""
    _check_full("x", x, idx)
    flat = x.reshape(idx.batch_size * idx.seq_len, *x.shape[2:])
    return flat if idx.identity else _GatherRows.apply(flat, idx.indices)


def scatter_packed(base: Tensor, packed: Tensor, idx: TokenIndex) -> Tensor:
    """A new (B, N, ...) tensor equal to `base` with the selected rows replaced by `packed`.

    Gradients flow to `base` for the unselected rows and to `packed` for the selected ones.
    `packed` is cast to `base.dtype` (e.g. a bf16 autocast attention output written back
    into an fp32 residual stream).
    """
    _check_full("base", base, idx)
    if not isinstance(packed, Tensor) or tuple(packed.shape) != (idx.total, *base.shape[2:]):
        raise KernelError(
            f"packed must have shape {(idx.total, *base.shape[2:])}, "
            f"got {tuple(getattr(packed, 'shape', ()))}"
        )
    if idx.identity:  # every row replaced: base does not reach the result
        return packed.to(base.dtype).view(base.shape)
    flat = base.reshape(idx.batch_size * idx.seq_len, *base.shape[2:])
    out = _ReplaceRows.apply(flat, packed.to(base.dtype), idx.indices)
    return out.view(base.shape)


def pack_to_padded(packed: Tensor, idx: TokenIndex) -> Tensor:
    """(total, ...) -> (B, max_count, ...), pad rows zero (see `idx.padded_valid`)."""
    if not isinstance(packed, Tensor) or packed.dim() < 1 or packed.shape[0] != idx.total:
        raise KernelError(
            f"packed must have {idx.total} rows (the TokenIndex total), "
            f"got shape {tuple(getattr(packed, 'shape', ()))}"
        )
    if idx.identity:
        return packed.view(idx.batch_size, idx.max_count, *packed.shape[1:])
    rows = idx.batch_size * idx.max_count
    out = _PlaceRows.apply(packed, idx.padded_slots, rows)
    return out.view(idx.batch_size, idx.max_count, *packed.shape[1:])


def padded_to_packed(padded: Tensor, idx: TokenIndex) -> Tensor:
    """(B, max_count, ...) -> (total, ...), dropping the pad rows."""
    if (
        not isinstance(padded, Tensor)
        or padded.dim() < 2
        or tuple(padded.shape[:2]) != (idx.batch_size, idx.max_count)
    ):
        raise KernelError(
            f"padded must have shape (B, max_count, ...) = "
            f"{(idx.batch_size, idx.max_count)}, got {tuple(getattr(padded, 'shape', ()))}"
        )
    flat = padded.reshape(idx.batch_size * idx.max_count, *padded.shape[2:])
    return flat if idx.identity else _GatherRows.apply(flat, idx.padded_slots)


def place_rows(src: Tensor, slots: Tensor, num_rows: int) -> Tensor:
    """(n, ...) -> (num_rows, ...) zeros with row slots[i] = src[i], for unique `slots`: a
    padded layout other than a TokenIndex's own (several selections side by side)."""
    if not isinstance(src, Tensor) or src.dim() < 1 or src.shape[0] != slots.shape[0]:
        raise KernelError(
            f"src must have {slots.shape[0]} rows (one per slot), "
            f"got shape {tuple(getattr(src, 'shape', ()))}"
        )
    return _PlaceRows.apply(src, slots, num_rows)

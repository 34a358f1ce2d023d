"""The "flash" implementation: position-masked attention on flash-attention's varlen kernel.

`varlen_runs` turns the position mask into varlen sequences that the kernel's bottom-right
causal mask serves exactly; this module packs q/k/v along that plan, calls
`flash_attn.flash_attn_varlen_func` (flash-attn >= 2.1, where causal became bottom-right
aligned), and scatters the outputs back, zero on rows that see no key like the reference.
GQA is native to the kernel (nheads_k divides nheads). Building the plan synchronises once
per call; pass `varlen_plan=build_varlen_plan(...)` to reuse one across layers instead.

`flash_attn` is imported lazily inside the call and probed with `find_spec` for the
reasons, so importing tokred_kernels never imports it (it is not a dependency).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .errors import KernelError
from .implementation import Implementation
from .position_attention import check_position_attention_inputs, empty_attention_output
from .varlen_runs import VarlenPlan, build_varlen_plan

__all__ = ["FLASH_IMPL", "flash_attn_version", "flash_position_attention"]

_MAX_HEAD_DIM = 256


@functools.cache
def flash_attn_version() -> tuple[int, ...] | None:
    """The installed flash_attn's (major, minor), or None when it cannot be found."""
    try:
        if importlib.util.find_spec("flash_attn") is None:
            return None
        raw = importlib.metadata.version("flash_attn")
    except (ImportError, ValueError, AttributeError, importlib.metadata.PackageNotFoundError):
        return None
    parts = []
    for piece in raw.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _varlen_func() -> Callable[..., Tensor]:
    """The kernel entry point (a seam: tests substitute an emulation on CPU)."""
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func


def _flash_reasons(op: str, inputs: Mapping[str, Any]) -> list[str]:
    if op != "position_attention":
        return []
    reasons = []
    version = flash_attn_version()
    if version is None:
        reasons.append("flash_attn is not installed (pip install flash-attn, on a CUDA machine)")
    elif version < (2, 1):
        reasons.append(f"flash_attn {version} < 2.1 aligns causal masks top-left, not bottom-right")
    if not torch.cuda.is_available():
        reasons.append("no CUDA device is available")
    tensors = [(n, inputs.get(n)) for n in ("q", "k", "v")]
    for name, t in tensors:
        if not isinstance(t, Tensor):
            continue
        if t.device.type != "cuda":
            reasons.append(f"input {name!r} is on {t.device}, flash_attn needs CUDA")
        if t.dtype not in (torch.float16, torch.bfloat16):
            reasons.append(f"input {name!r} is {t.dtype}, flash_attn needs float16 or bfloat16")
    dims = {t.shape[-1] for _, t in tensors if isinstance(t, Tensor) and t.dim() == 4}
    if len(dims) > 1:
        reasons.append(f"q, k, v head dims differ ({sorted(dims)}); flash_attn needs one")
    if any(d > _MAX_HEAD_DIM for d in dims):
        reasons.append(f"head dim {max(dims)} > {_MAX_HEAD_DIM}, the most flash_attn takes")
    if inputs.get("window") is not None:
        # flash's window counts sorted key *indices*; after token reduction positions have
        # gaps, so an index window is not the position window (flex handles windows).
        reasons.append("window is set: flash's window counts keys, not positions")
    return reasons


def _check_plan(plan: VarlenPlan, q: Tensor, k: Tensor) -> None:
    shape = (plan.batch, plan.num_queries, plan.num_keys)
    if shape != (q.shape[0], q.shape[2], k.shape[2]):
        raise KernelError(f"varlen_plan was built for (B, Nq, Nk)={shape}, not these inputs")
    if plan.q_rows.device != q.device:
        raise KernelError(f"varlen_plan is on {plan.q_rows.device}, inputs on {q.device}")


def flash_position_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    *,
    scale: float,
    dropout: float = 0.0,
    window: int | None = None,
    varlen_plan: VarlenPlan | None = None,
) -> Tensor:
    """`position_attention` on flash_attn's varlen kernel; same contract as the reference.

    `varlen_plan`, when given, must come from `build_varlen_plan` on these very positions
    and masks (only its sizes and device are checked); without it one is built here. The
    result is a (B, H, Nq, D) transposed view of (B, Nq, H, D) rows, so callers that go
    back to (B, Nq, H·D) pay no copy. Keys shared by several runs are gathered more than
    once, so their gradients are summed by index_add (atomics on CUDA: not bitwise
    deterministic, unlike the gather/scatter moves).
    """
    check_position_attention_inputs(
        q, k, v, q_positions, k_positions, q_valid, k_valid, dropout, window
    )
    if window is not None:
        raise KernelError("the flash backend does not take a window (see its reasons)")
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    if nq == 0 or nk == 0:
        return empty_attention_output(q, k, v)
    plan = varlen_plan
    if plan is None:
        plan = build_varlen_plan(q_positions, k_positions, q_valid, k_valid)
    _check_plan(plan, q, k)
    if plan.q_rows.numel() == 0:  # every query is padding or sees no key
        return empty_attention_output(q, k, v)
    q_packed = q.transpose(1, 2).reshape(b * nq, h, d).index_select(0, plan.q_rows)
    k_packed = k.transpose(1, 2).reshape(b * nk, hkv, d).index_select(0, plan.k_rows)
    v_packed = v.transpose(1, 2).reshape(b * nk, hkv, -1).index_select(0, plan.k_rows)
    packed_out = _varlen_func()(
        q_packed,
        k_packed,
        v_packed,
        plan.cu_seqlens_q,
        plan.cu_seqlens_k,
        plan.max_seqlen_q,
        plan.max_seqlen_k,
        dropout_p=dropout,
        softmax_scale=scale,
        causal=True,
    )
    out = q.new_zeros(b * nq, h, v.shape[3])
    out = out.index_copy(0, plan.q_rows, packed_out.to(out.dtype))
    return out.view(b, nq, h, -1).transpose(1, 2)


FLASH_IMPL = Implementation(
    name="flash",
    ops={"position_attention": flash_position_attention},
    check=_flash_reasons,
)

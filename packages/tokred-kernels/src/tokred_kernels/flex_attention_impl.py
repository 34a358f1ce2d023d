"""The "flex" implementation: position-masked attention on torch's FlexAttention.

The position rule is a `mask_mod` closing over the position and validity tensors;
`create_block_mask` turns it into a block-sparse mask, so blocks no query can see are
skipped, windows cost nothing extra, and unsorted keys need no repacking. GQA is
`enable_gqa=True`. Rows that see no key come out 0, as in the reference.

On CUDA the kernel is `torch.compile(flex_attention)` (eager flex on CUDA materialises the
full score matrix, which defeats the point) and the block mask is built compiled too. Each
new shape recompiles, so callers should bucket lengths. On CPU this torch runs flex
*eagerly* (checked: no `torch.compile` needed; it traces through dynamo with an eager
backend, ~10 s the first time a process imports dynamo, then ~1 s per new shape) and
forward only: FlexAttention has no CPU backward, so a CPU call that needs gradients is a
reason it cannot run. The eager CPU path is also unfused and measured ~7x slower than the
torch reference (B=2, H=8, N=1024, D=64), so `auto` passes flex over on CPU; choose it
explicitly to use it there.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .errors import KernelError
from .implementation import Implementation
from .position_attention import check_position_attention_inputs

__all__ = ["FLEX_IMPL", "flex_attention_available", "flex_position_attention"]

_FLEX_MODULE = "torch.nn.attention.flex_attention"


@functools.cache
def flex_attention_available() -> bool:
    """Whether this torch ships FlexAttention (found without importing it)."""
    try:
        return importlib.util.find_spec(_FLEX_MODULE) is not None
    except (ImportError, ValueError, AttributeError):
        return False


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _qkv(inputs: Mapping[str, Any]) -> list[tuple[str, Tensor]]:
    return [(n, t) for n in ("q", "k", "v") if isinstance(t := inputs.get(n), Tensor)]


def _flex_reasons(op: str, inputs: Mapping[str, Any]) -> list[str]:
    if op != "position_attention":
        return []
    reasons = []
    if not flex_attention_available():
        reasons.append(f"this torch ({torch.__version__}) has no {_FLEX_MODULE}")
    if inputs.get("dropout", 0.0):
        reasons.append("dropout > 0: FlexAttention has no attention dropout")
    tensors = _qkv(inputs)
    devices = {t.device.type for _, t in tensors}
    if devices - {"cpu", "cuda"}:
        reasons.append(f"inputs on {sorted(devices - {'cpu', 'cuda'})}: flex runs on CPU or CUDA")
    if "cpu" in devices and torch.is_grad_enabled() and any(t.requires_grad for _, t in tensors):
        reasons.append("inputs on CPU need gradients: FlexAttention has no CPU backward")
    shaped = [t for _, t in tensors if t.dim() == 4]
    if any(t.shape[2] == 0 for t in shaped):
        reasons.append("an empty query or key length: flex cannot build a block mask for it")
    if "cuda" in devices and len(shaped) == 3:
        q, k, v = shaped
        if min(q.shape[3], v.shape[3]) < 16:
            reasons.append(f"head dim {min(q.shape[3], v.shape[3])} < 16, flex's CUDA minimum")
        group = q.shape[1] // max(k.shape[1], 1)
        if group & (group - 1):
            reasons.append(f"{group} query heads per kv head: flex's CUDA kernels need 2^n")
    return reasons


#: Below this many (B x Nq x Nk) mask entries, `auto` leaves a CUDA call to the torch
#: reference: its dense boolean mask is then small (256 MiB at the bound), and FlexAttention
#: costs more than it saves. Measured 2026-12-04 on an H200 (torch 2.11, bf16, `tokred bench
#: --device cuda --shape llama-1b`: 4 samples of 704 tokens, 16 layers): the HiMix step
#: took 0.135 s through flex and 0.061 s through the reference, the mixed batch 0.153 s and
#: 0.078 s (a block mask built and a compiled graph dispatched in every layer, for masks
#: of about 2 M entries). Past the bound the dense mask's memory is what flex avoids.
FLEX_AUTO_MIN_MASK = 2**28


def _flex_auto_skip(op: str, inputs: Mapping[str, Any]) -> list[str]:
    if op != "position_attention":
        return []
    tensors = _qkv(inputs)
    if any(t.device.type == "cpu" for _, t in tensors):
        return ["inputs on CPU: flex's eager CPU path is slower than torch's SDPA"]
    q, k = inputs.get("q"), inputs.get("k")
    if isinstance(q, Tensor) and isinstance(k, Tensor) and q.dim() == 4 and k.dim() == 4:
        entries = q.shape[0] * q.shape[2] * k.shape[2]
        if entries < FLEX_AUTO_MIN_MASK:
            return [
                f"a dense mask of {entries} entries (< {FLEX_AUTO_MIN_MASK}) is small: the "
                "torch reference is faster there (measured on an H200)"
            ]
    return []


def flex_position_attention(
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
    varlen_plan: Any = None,
) -> Tensor:
    """`position_attention` on FlexAttention; same contract as the reference.

    `varlen_plan` is the flash backend's hint and is ignored here.
    """
    del varlen_plan  # accepted so that every backend takes the op's full signature
    check_position_attention_inputs(
        q, k, v, q_positions, k_positions, q_valid, k_valid, dropout, window
    )
    if dropout:
        raise KernelError("the flex backend has no attention dropout (see its reasons)")
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    qp, kp = q_positions.long(), k_positions.long()

    def mask_mod(b: Tensor, h: Tensor, qi: Tensor, kj: Tensor) -> Tensor:
        rel = qp[b, qi] - kp[b, kj]
        seen = q_valid[b, qi] & k_valid[b, kj] & (rel >= 0)
        return seen & (rel < window) if window is not None else seen

    b, _, nq, _ = q.shape
    on_cuda = q.device.type == "cuda"
    block_mask = create_block_mask(mask_mod, b, None, nq, k.shape[2], q.device, _compile=on_cuda)
    if on_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise KernelError("the flex backend cannot differentiate on CPU (see its reasons)")
    with warnings.catch_warnings():
        # Eager on CPU is the choice here (see the module docstring), not an oversight.
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        # FlexAttention rejects CPU tensors that require grad even under no_grad; no
        # gradient is wanted here, so detached views are the same computation.
        return flex_attention(
            q.detach(), k.detach(), v.detach(), block_mask=block_mask, scale=scale, enable_gqa=True
        )


FLEX_IMPL = Implementation(
    name="flex",
    ops={"position_attention": flex_position_attention},
    check=_flex_reasons,
    auto_skip=_flex_auto_skip,
)

"""The Triton implementation's registry entry (its kernels come in a later issue).

It is registered now so the dispatch mechanism is real: `auto` already asks it first and
falls back to torch for the reasons it gives, and `TOKRED_KERNELS_IMPL=triton` fails with
those reasons. Importing this module never imports triton; availability is probed with
`importlib.util.find_spec` (cached), so `import tokred_kernels` stays cheap and safe on
machines without triton or CUDA.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from typing import Any

import torch

from .implementation import Implementation

__all__ = ["TRITON_IMPL", "triton_importable"]


@functools.cache
def triton_importable() -> bool:
    """Whether a `triton` package can be found (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _tensors(inputs: Mapping[str, Any]) -> list[tuple[str, torch.Tensor]]:
    found = []
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            found.append((name, value))
        elif hasattr(value, "indices") and isinstance(value.indices, torch.Tensor):
            found.append((name, value.indices))  # a TokenIndex
    return found


def _triton_reasons(op: str, inputs: Mapping[str, Any]) -> list[str]:
    reasons = []
    if not triton_importable():
        reasons.append("triton is not importable (pip install triton, on a CUDA machine)")
    if not torch.cuda.is_available():
        reasons.append("no CUDA device is available")
    for name, tensor in _tensors(inputs):
        if tensor.device.type != "cuda":
            reasons.append(f"input {name!r} is on {tensor.device}, triton kernels need CUDA")
    return reasons


TRITON_IMPL = Implementation(name="triton", ops={}, check=_triton_reasons)

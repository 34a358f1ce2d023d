"""Pick the implementation that runs an op: TOKRED_KERNELS_IMPL=auto|flash|flex|triton|torch.

`auto` (the default) asks each registered implementation, fastest first, and takes the
first that reports no reason it cannot run nor a reason `auto` should pass it over (a
later one is faster on these inputs); torch is last and always can. Naming an
implementation explicitly is a promise the caller wants that one: if it cannot run, the
call fails with every reason rather than silently falling back (a benchmark that quietly
measured the torch path would be worse than an error). The variable is read on every call,
so tests and scripts can change it at any time.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import KernelError
from .flash_varlen_impl import FLASH_IMPL
from .flex_attention_impl import FLEX_IMPL
from .implementation import OP_NAMES, Implementation
from .torch_impl import TORCH_IMPL
from .triton_impl import TRITON_IMPL

__all__ = [
    "IMPL_ENV_VAR",
    "AUTO",
    "call",
    "implementations",
    "register_implementation",
    "requested_implementation",
    "select_implementation",
]

IMPL_ENV_VAR = "TOKRED_KERNELS_IMPL"
AUTO = "auto"

# Preference order for `auto`: fastest first, the always-available torch reference last.
# flash and flex implement only position_attention; for the other ops they refuse at once.
_IMPLEMENTATIONS: list[Implementation] = [FLASH_IMPL, FLEX_IMPL, TRITON_IMPL, TORCH_IMPL]


def implementations() -> tuple[Implementation, ...]:
    """Registered implementations in `auto` preference order."""
    return tuple(_IMPLEMENTATIONS)


def register_implementation(impl: Implementation, *, before: str | None = None) -> None:
    """Add (or replace, by name) an implementation; `before` puts it ahead of that name."""
    if impl.name == AUTO:
        raise KernelError(f"{AUTO!r} is reserved and cannot name an implementation")
    _IMPLEMENTATIONS[:] = [i for i in _IMPLEMENTATIONS if i.name != impl.name]
    names = [i.name for i in _IMPLEMENTATIONS]
    if before is None:
        _IMPLEMENTATIONS.append(impl)
    elif before in names:
        _IMPLEMENTATIONS.insert(names.index(before), impl)
    else:
        raise KernelError(f"cannot register before {before!r}: known are {', '.join(names)}")


def requested_implementation() -> str:
    """The validated value of TOKRED_KERNELS_IMPL (default 'auto')."""
    raw = os.environ.get(IMPL_ENV_VAR, "")
    value = raw.strip().lower() or AUTO
    allowed = (AUTO, *(i.name for i in _IMPLEMENTATIONS))
    if value not in allowed:
        raise KernelError(
            f"{IMPL_ENV_VAR}={raw!r} is not a valid choice; allowed values: {', '.join(allowed)}"
        )
    return value


def select_implementation(op: str, /, impl: str | None = None, **inputs: Any) -> Implementation:
    """The implementation that will run `op` on `inputs`.

    `impl` overrides the environment variable (None reads it). Raises KernelError with every
    reason when the requested implementation (or, under auto, every one) cannot run.
    """
    if op not in OP_NAMES:
        raise KernelError(f"unknown op {op!r}; known ops: {', '.join(OP_NAMES)}")
    choice = requested_implementation() if impl is None else impl.strip().lower()
    if choice == AUTO:
        candidates = list(_IMPLEMENTATIONS)
    else:
        candidates = [i for i in _IMPLEMENTATIONS if i.name == choice]
        if not candidates:
            allowed = (AUTO, *(i.name for i in _IMPLEMENTATIONS))
            raise KernelError(
                f"unknown implementation {impl!r}; allowed values: {', '.join(allowed)}"
            )
    for candidate in candidates:
        # A backend without the op is passed over before its checks run: they probe the
        # devices and libraries, which cost more than the gathers this dispatches (several
        # per layer). The error below still gives every reason of every backend.
        if op in candidate.ops and not _refusal(candidate, op, choice, inputs):
            return candidate
    refusals = [
        f"{candidate.name}: " + "; ".join(_refusal(candidate, op, choice, inputs))
        for candidate in candidates
    ]
    source = f"{IMPL_ENV_VAR}={choice}" if impl is None else f"impl={choice!r}"
    raise KernelError(
        f"no implementation can run {op!r} ({source}):\n  "
        + "\n  ".join(refusals)
        + (f"\nunset {IMPL_ENV_VAR} or set it to 'auto' to fall back" if choice != AUTO else "")
    )


def _refusal(candidate: Implementation, op: str, choice: str, inputs: dict) -> list[str]:
    """Why `candidate` does not run `op` on `inputs` under `choice`; empty when it does."""
    reasons = candidate.not_supported_reasons(op, **inputs)
    if choice == AUTO and not reasons:
        reasons = candidate.auto_skip_reasons(op, **inputs)
    return reasons


def call(op: str, /, **inputs: Any) -> Any:
    """Run `op` with the selected implementation."""
    return select_implementation(op, **inputs).ops[op](**inputs)

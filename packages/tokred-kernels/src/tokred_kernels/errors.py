"""The error type of tokred-kernels.

`tokred_kernels` is a leaf package (it must not import `tokred_core`), so it has its own
error. It subclasses `ValueError` like `tokred_core.TokredError`, so callers that catch
`ValueError` (or translate it into the project error) see kernel mistakes too.
"""

from __future__ import annotations

__all__ = ["KernelError"]


class KernelError(ValueError):
    """A caller mistake (bad shape, bad mask, bad implementation choice); the message names it."""

"""Argparse types for numeric options: a bad number is refused when the command line is
parsed, as one line naming the option (argparse adds the name), before anything loads.

Why: `int` and `float` alone accept -1 questions, nan temperatures and 1e11-token
sequences, which then fail deep inside (a traceback, a MemoryError) or, worse, pass
silently.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["count", "finite_float", "out_folder", "MAX_TOKENS"]

#: The longest sequence `tokred flops` prices: a plan is built per token, so anything near
#: a billion would only run out of memory.
MAX_TOKENS = 10_000_000


def count(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return value

    parse.__name__ = "count"
    return parse


def finite_float(minimum: float | None = None) -> Callable[[str], float]:
    """A finite number, at least `minimum` when given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    parse.__name__ = "finite_float"
    return parse


def out_folder(text: str) -> str:
    """A folder that exists or can be created (its nearest existing parent is a writable
    folder); nothing is created here. Why at parse time: `eval` and `analyze` write only
    after loading a model, and a path under a regular file would fail only then."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{text!r}: cannot create it ({existing} is not a writable folder)"
        )
    return text

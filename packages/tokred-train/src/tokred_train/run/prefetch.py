"""Micro-batches built ahead, in a background thread, while the model trains.

Why: collation reads the records, builds the layout and, for a model that reads
understanding images as pixels (Janus), decodes and resizes those images from their files.
That host work would otherwise sit between two device steps. Micro-batch m is a pure
function of (seed, m) (sampler.py), so building it early changes nothing but when it is
ready: a run with prefetching computes the very batches, and losses, of a run without.
One thread is enough: PIL decoding and torch ops release the GIL, and collation stays
cheap next to a training step.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """get(m) returns build(m), building up to `depth` later indices in the background.

    Indices are asked for in increasing order (a jump, e.g. after resume, is fine: the
    queue is rebuilt). depth 0 builds synchronously in get().
    """

    def __init__(self, build: Callable[[int], T], depth: int):
        if depth < 0:
            raise ValueError(f"prefetch depth {depth} must be >= 0")
        self.build, self.depth = build, depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokred-prefetch") if depth else None
        self._pending: dict[int, Future[T]] = {}

    def get(self, index: int) -> T:
        if self._pool is None:
            return self.build(index)
        for stale in [i for i in self._pending if i < index]:
            self._pending.pop(stale).cancel()
        for ahead in range(index, index + self.depth + 1):
            if ahead not in self._pending:
                self._pending[ahead] = self._pool.submit(self.build, ahead)
        return self._pending.pop(index).result()  # re-raises a build error here

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

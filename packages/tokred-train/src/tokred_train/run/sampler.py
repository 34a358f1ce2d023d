"""Which samples go into micro-batch m: a pure function of (seed, m), so resuming needs only
the step.

Mixing: a fraction `ratio` of every global micro-batch of G samples is understanding. When
ratio * G is not a whole number the understanding count alternates between its floor and
ceiling so that the first m micro-batches hold exactly floor(m * ratio * G) understanding
samples (error diffusion, no randomness).

Order: each task is an endless stream of epochs; epoch e is a permutation of the task's
samples drawn from numpy's generator seeded with (seed, task, e). Micro-batch m takes the
next samples of each stream. Under torchrun rank r keeps every world_size-th sample of
the global micro-batch (both tasks spread evenly over ranks).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from tokred_core import TASK_NAMES, TokredError

__all__ = ["MixedBatchSampler"]


class MixedBatchSampler:
    def __init__(
        self,
        sizes: dict[str, int],
        understanding_ratio: float,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise TokredError(f"batch_size {batch_size} must be >= 1")
        self.sizes = {task: int(sizes.get(task, 0)) for task in TASK_NAMES}
        self.ratio = Fraction(understanding_ratio).limit_denominator(10**6)
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        for task, share in (("understanding", self.ratio), ("generation", 1 - self.ratio)):
            if share > 0 and self.sizes[task] == 0:
                raise TokredError(
                    f"data.understanding_ratio={float(self.ratio)} asks for {task} samples but the "
                    f"data has none; set data.understanding_ratio="
                    f"{0 if task == 'understanding' else 1} or add {task} data"
                )

    def _understanding_before(self, micro: int) -> int:
        return int(self.ratio * micro * self.global_batch)  # floor for a non-negative Fraction

    def counts(self, micro: int) -> tuple[int, int]:
        """(understanding, generation) samples in global micro-batch `micro`."""
        u = self._understanding_before(micro + 1) - self._understanding_before(micro)
        return u, self.global_batch - u

    def _stream(self, task_id: int, start: int, count: int) -> np.ndarray:
        n = self.sizes[TASK_NAMES[task_id]]
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            pos = start + i
            epoch, offset = divmod(pos, n)
            key = (task_id, epoch)
            perm = self._perms.get(key)
            if perm is None:
                if len(self._perms) > 8:  # only the current epochs are ever needed
                    self._perms.clear()
                perm = np.random.default_rng([self.seed, task_id, epoch]).permutation(n)
                self._perms[key] = perm
            out[i] = perm[offset]
        return out

    def draw(self, micro: int) -> dict[str, np.ndarray]:
        """This rank's sample indices of global micro-batch `micro`, by task."""
        u_before = self._understanding_before(micro)
        g_before = micro * self.global_batch - u_before
        nu, ng = self.counts(micro)
        u = self._stream(0, u_before, nu) if nu else np.empty(0, dtype=np.int64)
        g = self._stream(1, g_before, ng) if ng else np.empty(0, dtype=np.int64)
        if self.world_size == 1:
            return {"understanding": u, "generation": g}
        tasks = np.concatenate([np.zeros(nu, dtype=np.int64), np.ones(ng, dtype=np.int64)])
        index = np.concatenate([u, g])
        mine = slice(self.rank, None, self.world_size)
        tasks, index = tasks[mine], index[mine]
        return {"understanding": index[tasks == 0], "generation": index[tasks == 1]}

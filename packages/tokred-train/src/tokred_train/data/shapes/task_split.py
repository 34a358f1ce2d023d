"""A split of the shapes set's (kind, position) combinations between the two tasks.

Why: with every training image serving both tasks, each task's own data already holds
everything the other task could teach it, so joint training has little to add (the first
full study measured no synergy on understanding). The synergy study needs a benchmark where
each task's data alone lacks something that the other task's data shows. This split holds
some combinations of a shape's kind and grid cell out of each task's training images:

- `unseen["understanding"]`: combinations that only generation trains on (its captions
  and target images show them; no understanding question is asked about an image that
  holds one);
- `unseen["generation"]`: combinations that only understanding trains on (questions are
  asked about them; no generation target holds one);
- every other combination trains both tasks.

Validation then measures transfer: its understanding questions ask only about shapes whose
combination understanding never trained on, and its generation prompts all ask for a
combination that generation never trained on. An isolated run can only get them from what
its own task's data teaches about kinds and cells separately; a unified run has also seen
the very combination, through the other task.

Why (kind, position) and not (kind, colour): the patch VQ codes of a shape do not depend
on its cell (cells are aligned to the patch grid), so a held-out cell asks for known codes
at new places; a held-out colour would ask generation for codes it never emitted, which no
amount of understanding data can teach an untied output head.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from tokred_core import TokredError

__all__ = ["Combo", "TaskSplit"]

#: A shape's (kind, position).
Combo = tuple[str, str]
BOTH_TASKS: tuple[str, ...] = ("understanding", "generation")


def _field(shape: object, name: str) -> str:
    return shape[name] if isinstance(shape, Mapping) else getattr(shape, name)


class TaskSplit:
    """For each kind, one cell that only understanding trains on and one that only
    generation trains on, drawn per seed (the rest of the cells train both)."""

    def __init__(self, kinds: Sequence[str], positions: Sequence[str], seed: int = 0) -> None:
        if len(positions) < 2:
            raise TokredError(f"a task split needs at least 2 positions, got {list(positions)}")
        self.unseen: dict[str, frozenset[Combo]] = {}
        only_understanding, only_generation = set(), set()
        for kind in kinds:
            # A seeded ranking of the cells per kind (blake2b: the same on every platform).
            ranked = sorted(
                positions,
                key=lambda p: hashlib.blake2b(
                    f"{seed}/{kind}/{p}".encode(), digest_size=8
                ).digest(),
            )
            only_understanding.add((kind, ranked[0]))
            only_generation.add((kind, ranked[1]))
        self.unseen = {
            "understanding": frozenset(only_generation),
            "generation": frozenset(only_understanding),
        }

    def combos(self, shapes: Sequence[object]) -> set[Combo]:
        return {(_field(s, "kind"), _field(s, "position")) for s in shapes}

    def train_tasks(self, shapes: Sequence[object]) -> tuple[str, ...]:
        """The tasks a training image may serve: () when it holds a combination unseen by
        each task (the image would leak one of them, so it is drawn again)."""
        held = self.combos(shapes)
        return tuple(t for t in BOTH_TASKS if not held & self.unseen[t])

    def validation_tasks(self, shapes: Sequence[object]) -> tuple[str, ...]:
        """The tasks a validation image tests transfer on: those that never trained on one
        of its combinations (() when there is none: it measures no transfer)."""
        held = self.combos(shapes)
        return tuple(t for t in BOTH_TASKS if held & self.unseen[t])

    def is_unseen(self, task: str, shape: object) -> bool:
        """Whether `task` never trained on the combination of `shape`."""
        return (_field(shape, "kind"), _field(shape, "position")) in self.unseen[task]

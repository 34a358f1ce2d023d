"""Token layouts: which segment every token belongs to, and which task every sample is.

A unified model sees two kinds of sequences (PAPER.md, section 1):
- understanding: (system, image, instruction, output) with the loss on the output text;
- generation: (system, instruction, output) where the output *is* the image tokens.
Padding is a segment of its own, so one (B, N) tensor describes a padded batch that mixes
both tasks. Everything downstream (policies, projections sharing, cost, the attention
probe) reads the layout instead of guessing from token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import torch

from .errors import TokredError

__all__ = ["Segment", "Task", "TokenLayout", "SEGMENT_NAMES", "TASK_NAMES", "parse_task"]


class Segment(IntEnum):
    SYSTEM = 0
    IMAGE = 1
    INSTRUCTION = 2
    OUTPUT = 3
    PAD = 4


class Task(IntEnum):
    UNDERSTANDING = 0
    GENERATION = 1


SEGMENT_NAMES = tuple(s.name.lower() for s in Segment)
TASK_NAMES = tuple(t.name.lower() for t in Task)


def parse_task(value: str | int | Task) -> Task:
    """'understanding' / 'generation' (or the enum / its value) -> Task, with a clear error."""
    if isinstance(value, Task):
        return value
    if isinstance(value, int) and value in (0, 1):
        return Task(value)
    if isinstance(value, str) and value.lower() in TASK_NAMES:
        return Task[value.upper()]
    raise TokredError(f"unknown task {value!r}: expected one of {', '.join(TASK_NAMES)}")


def _parse_segment(value: str | int | Segment) -> Segment:
    if isinstance(value, Segment):
        return value
    if isinstance(value, int) and 0 <= value < len(Segment):
        return Segment(value)
    if isinstance(value, str) and value.lower() in SEGMENT_NAMES:
        return Segment[value.upper()]
    raise TokredError(f"unknown segment {value!r}: expected one of {', '.join(SEGMENT_NAMES)}")


@dataclass(frozen=True)
class TokenLayout:
    """Segments of a padded batch and the task of each sample.

    segments: (B, N) long tensor of `Segment` values (PAD marks padding, on either side).
    tasks:    (B,) long tensor of `Task` values.
    """

    segments: torch.Tensor
    tasks: torch.Tensor
    sample_ids: tuple[int, ...] | None = None
    """Index of each row in the batch it was selected from (for error messages)."""

    def sample_name(self, row: int) -> int:
        """The batch index of `row` as the user knows it (before any `select`)."""
        return self.sample_ids[row] if self.sample_ids is not None else row

    def __post_init__(self) -> None:
        seg, tasks = self.segments, self.tasks
        if seg.dim() != 2:
            raise TokredError(f"layout segments must be (batch, seq), got shape {tuple(seg.shape)}")
        if tasks.dim() != 1 or tasks.shape[0] != seg.shape[0]:
            raise TokredError(
                f"layout tasks must be (batch,) = ({seg.shape[0]},), got shape {tuple(tasks.shape)}"
            )
        if seg.numel() and (int(seg.min()) < 0 or int(seg.max()) >= len(Segment)):
            raise TokredError(f"layout segments hold values outside 0..{len(Segment) - 1}")
        if tasks.numel() and (int(tasks.min()) < 0 or int(tasks.max()) >= len(Task)):
            raise TokredError(f"layout tasks hold values outside 0..{len(Task) - 1}")
        # Generation has no input image: its image tokens are the OUTPUT segment.
        gen = tasks == Task.GENERATION
        if bool(((seg == Segment.IMAGE) & gen[:, None]).any()):
            bad = int(torch.nonzero(((seg == Segment.IMAGE) & gen[:, None]).any(1))[0, 0])
            raise TokredError(
                f"sample {bad} is a generation sample but has an IMAGE segment; "
                "generation images are the OUTPUT segment"
            )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_spans(
        cls,
        spans: Sequence[Sequence[tuple[str | int | Segment, int]]],
        tasks: Sequence[str | int | Task],
        length: int | None = None,
        padding_side: str = "right",
        device: torch.device | str | None = None,
    ) -> TokenLayout:
        """Build a layout from per-sample (segment, count) spans, padded to `length`.

        Example: ``[[("system", 3), ("image", 16), ("instruction", 5), ("output", 4)]]``.
        """
        if len(spans) != len(tasks):
            raise TokredError(
                f"{len(spans)} span lists but {len(tasks)} tasks: give one task per sample"
            )
        if padding_side not in ("left", "right"):
            raise TokredError(f"padding_side {padding_side!r}: expected 'left' or 'right'")
        rows: list[list[int]] = []
        for b, sample in enumerate(spans):
            row: list[int] = []
            for seg, count in sample:
                s = _parse_segment(seg)
                if not isinstance(count, int) or count < 0:
                    raise TokredError(
                        f"sample {b}: span {s.name.lower()} has count {count!r}; need an int >= 0"
                    )
                if s == Segment.PAD:
                    raise TokredError(
                        f"sample {b}: spans must not contain padding; it is added by length"
                    )
                row.extend([int(s)] * count)
            if not row:
                raise TokredError(f"sample {b} has no tokens")
            rows.append(row)
        longest = max(len(r) for r in rows) if rows else 0
        n = longest if length is None else length
        if n < longest:
            raise TokredError(
                f"layout length {n} is shorter than the longest sample ({longest} tokens)"
            )
        seg = torch.full((len(rows), n), int(Segment.PAD), dtype=torch.long)
        for b, row in enumerate(rows):
            if padding_side == "right":
                seg[b, : len(row)] = torch.tensor(row)
            else:
                seg[b, n - len(row) :] = torch.tensor(row)
        task_t = torch.tensor([int(parse_task(t)) for t in tasks], dtype=torch.long)
        return cls(seg.to(device), task_t.to(device))

    # ---- derived views ------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.segments.shape[0]

    @property
    def seq_len(self) -> int:
        return self.segments.shape[1]

    @property
    def device(self) -> torch.device:
        return self.segments.device

    def valid_mask(self) -> torch.Tensor:
        """(B, N) bool: real tokens (not padding); the usual HF attention_mask."""
        return self.segments != Segment.PAD

    def image_mask(self) -> torch.Tensor:
        """(B, N) bool: tokens of the image modality (input image, or generated image output)."""
        gen = (self.tasks == Task.GENERATION)[:, None]
        return (self.segments == Segment.IMAGE) | (gen & (self.segments == Segment.OUTPUT))

    def text_mask(self) -> torch.Tensor:
        """(B, N) bool: real tokens that are not image tokens."""
        return self.valid_mask() & ~self.image_mask()

    def prompt_mask(self) -> torch.Tensor:
        """(B, N) bool: the text of the prompt (system and instruction), before any output."""
        return (self.segments == Segment.SYSTEM) | (self.segments == Segment.INSTRUCTION)

    def target_mask(self) -> torch.Tensor:
        """(B, N) bool: tokens that carry the loss (the output segment of either task)."""
        return self.segments == Segment.OUTPUT

    def position_ids(self) -> torch.Tensor:
        """(B, N) long: RoPE positions counting real tokens only (left padding gets 0)."""
        valid = self.valid_mask().long()
        return (valid.cumsum(-1) - 1).clamp(min=0)

    def task_mask(self, task: Task) -> torch.Tensor:
        """(B,) bool: samples of `task`."""
        return self.tasks == int(task)

    def last_prompt_index(self) -> torch.Tensor:
        """(B,) long: index of each sample's last system/instruction token, -1 if none."""
        prompt = self.prompt_mask()
        idx = torch.arange(self.seq_len, device=self.device).expand_as(prompt)
        return torch.where(prompt, idx, torch.full_like(idx, -1)).max(-1).values

    def select(self, rows: torch.Tensor) -> TokenLayout:
        """The layout of a subset of samples (bool mask or indices over the batch)."""
        rows_t = torch.as_tensor(rows, device=self.segments.device)
        if rows_t.dtype == torch.bool:
            rows_t = torch.nonzero(rows_t).squeeze(1)
        ids = tuple(self.sample_name(int(r)) for r in rows_t.tolist())
        return TokenLayout(self.segments[rows_t], self.tasks[rows_t], ids)

    def check_length(self, seq_len: int, batch_size: int | None = None) -> None:
        """Raise if this layout does not describe a (batch_size, seq_len) batch."""
        if self.seq_len != seq_len:
            raise TokredError(
                f"layout length {self.seq_len} differs from the sequence length {seq_len}"
            )
        if batch_size is not None and self.batch_size != batch_size:
            raise TokredError(
                f"layout batch size {self.batch_size} differs from the input batch size {batch_size}"
            )

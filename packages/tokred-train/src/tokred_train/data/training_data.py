"""Training data in the form the loop consumes: per-task samples with pre-encoded image codes.

Why: every image is encoded by the VQ tokenizer once, before the first step; a batch is
then a list of text records plus a row lookup into the codes tensor, collated on the fly
by `tokred_train.data.collate` (a few milliseconds for a tiny batch), so the hot path never
touches pixels. The exception is a model that reads understanding images through its own
vision encoder (Janus's SigLIP): those samples keep their fitted uint8 pixels, normalised
per batch into `pixel_values`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tokred_core import TASK_NAMES, TokredError

from .collate import collate, encode_sample
from .image_source import LazyPixels
from .pixels import PixelSpec
from .protocols import ImageTokenizer, TokenVocab

__all__ = ["TaskSamples", "TrainData"]


@dataclass
class TaskSamples:
    """The samples of one task: text records (the fields `collate` reads) and their codes."""

    task: str
    records: list[dict[str, Any]]
    codes: torch.Tensor
    """(len(records), T): the codes of each record's image (input or target), stored as
    int32 (half of long's memory; `take` returns long). T is 0 when nothing reads them."""
    pixels: torch.Tensor | LazyPixels | None = None
    """Each record's fitted image, kept only for a model that reads understanding images as
    pixels (then `codes` of those records are not read): a (len(records), H, W, 3) uint8
    tensor, or a `LazyPixels` that reads the files when taken."""
    sources: list[str] | None = None
    """Where each record came from, as errors name it (e.g. "line 3 of gen.jsonl");
    None: records are named by their index."""

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise TokredError(
                f"unknown task {self.task!r}: expected one of {', '.join(TASK_NAMES)}"
            )
        if self.codes.dim() != 2 or self.codes.shape[0] != len(self.records):
            raise TokredError(
                f"{self.task}: {len(self.records)} records but codes of shape {tuple(self.codes.shape)}"
            )
        self.codes = self.codes.to(torch.int32)
        if self.pixels is not None and (
            len(self.pixels) != len(self.records)
            or (isinstance(self.pixels, torch.Tensor) and self.pixels.dim() != 4)
        ):
            raise TokredError(
                f"{self.task}: {len(self.records)} records but pixels of shape "
                f"{getattr(self.pixels, 'shape', len(self.pixels))}"
            )
        if self.sources is not None and len(self.sources) != len(self.records):
            raise TokredError(
                f"{self.task}: {len(self.records)} records but {len(self.sources)} sources"
            )

    def source(self, index: int) -> str:
        """How errors name record `index`."""
        if self.sources is not None:
            return self.sources[index]
        return f"{self.task} record {index}"

    def __len__(self) -> int:
        return len(self.records)

    def take(self, indices: Sequence[int]) -> tuple[list[dict[str, Any]], torch.Tensor]:
        idx = [int(i) for i in indices]
        return [self.records[i] for i in idx], self.codes[idx].long()

    def take_pixels(self, indices: Sequence[int]) -> torch.Tensor | None:
        if self.pixels is None:
            return None
        if isinstance(self.pixels, LazyPixels):
            return self.pixels.take(indices)
        return self.pixels[[int(i) for i in indices]]

    @classmethod
    def empty(cls, task: str, tokens_per_image: int) -> TaskSamples:
        return cls(task, [], torch.zeros(0, tokens_per_image, dtype=torch.long))


@dataclass
class TrainData:
    """Everything the loop needs from the data side."""

    vocab: TokenVocab
    image_tokenizer: ImageTokenizer
    train: dict[str, TaskSamples]
    """Training samples by task name ('understanding', 'generation')."""
    val: dict[str, TaskSamples]
    """Held-out samples by task name (possibly empty)."""
    system_prompt: str
    max_length: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What was built (sizes, skipped records), for the run summary."""
    understanding_pixels: PixelSpec | None = None
    """Set when understanding images reach the model as pixels (see ModelIO)."""
    loss_path: str = "causal_lm"
    """How `tokred_train.run.step` turns a batch into losses (see ModelIO)."""

    def collate(self, parts: Mapping[str, Sequence[int]], split: str = "train") -> dict[str, Any]:
        """One batch from {task: sample indices}: input_ids, labels, attention_mask,
        image_code_mask, layout, and pixel_values (understanding images, in batch order)
        when the model reads them as pixels."""
        samples = self.train if split == "train" else self.val
        records: list[dict[str, Any]] = []
        codes: list[torch.Tensor] = []
        pixels: list[torch.Tensor] = []
        for task, indices in parts.items():
            if len(indices):
                recs, c = samples[task].take(indices)
                records += recs
                codes.append(c)
                if task == "understanding" and self.understanding_pixels is not None:
                    pixels.append(samples[task].take_pixels(indices))
        if not records:
            raise TokredError("a batch needs at least one sample")
        batch = collate(
            records,
            self.vocab,
            # One row per record: widths differ when one task's codes are not read (T = 0).
            [row for part in codes for row in part],
            system_prompt=self.system_prompt,
            max_length=self.max_length,
        )
        if pixels:
            batch["pixel_values"] = self.understanding_pixels.normalize(torch.cat(pixels).numpy())
        return batch

    def check_lengths(self, limit: int, setting: str, fix: str) -> None:
        """Refuse, before the first step, a sample of either split longer than `limit`
        tokens: one line naming the first such record and its file, its length, `setting`
        (what sets the limit, e.g. "data.max_length=512") and `fix`."""
        over = [
            (n, part.source(i))
            for split in (self.train, self.val)
            for part in split.values()
            for i, n in enumerate(self._lengths(part))
            if n > limit
        ]
        if over:
            n, where = over[0]
            more = f" ({len(over) - 1} more samples are too)" if len(over) > 1 else ""
            raise TokredError(f"{where}: {n} tokens, over {setting}{more}; {fix}")

    def _lengths(self, part: TaskSamples) -> list[int]:
        """Tokens of each sample of `part`, as `collate` lays it out."""
        codes = part.codes.long()
        return [
            len(encode_sample(r, codes[i], self.vocab, self.system_prompt, index=i).ids)
            for i, r in enumerate(part.records)
        ]

    def sizes(self, split: str = "train") -> dict[str, int]:
        samples = self.train if split == "train" else self.val
        return {task: len(samples.get(task, ())) for task in TASK_NAMES}

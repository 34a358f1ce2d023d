"""The evaluation records of a shapes split: each sample with its image's codes.

Why apart: understanding and generation both score records of the held-out split, and
both accept either the codes already encoded or the VQ tokenizer that encodes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokred_core import TokredError

from ..data.patch_vq import PatchVQTokenizer
from ..data.shapes.samples import served_tasks
from .answers import question_type

__all__ = ["codes_for", "shapes_eval_records"]


def codes_for(
    records: Sequence[Mapping[str, Any]],
    codes_or_vq: torch.Tensor | Sequence[Any] | PatchVQTokenizer,
) -> list[torch.Tensor]:
    if isinstance(codes_or_vq, PatchVQTokenizer):
        missing = [i for i, r in enumerate(records) if r.get("image") is None]
        if missing:
            raise TokredError(
                f"record {missing[0]} has no 'image' to encode: give VQ codes per record instead"
            )
        codes = codes_or_vq.encode([r["image"] for r in records])
        return list(codes)
    if len(codes_or_vq) != len(records):
        raise TokredError(
            f"{len(records)} records but {len(codes_or_vq)} code rows: give one per record"
        )
    return [torch.as_tensor(c, dtype=torch.long) for c in codes_or_vq]


def shapes_eval_records(
    split: Any,
    vq: PatchVQTokenizer,
    num_understanding: int | None = None,
    num_generation: int | None = None,
    codes: torch.Tensor | None = None,
) -> tuple[list[dict[str, Any]], torch.Tensor, list[dict[str, Any]]]:
    """Evaluation records from a shapes split (e.g. the validation split).

    Returns (understanding records, their VQ codes (R, T), generation records). The first
    `num_understanding` questions (every question of each image in turn) and the first
    `num_generation` captions are taken; None takes all. Generation records carry the
    `shapes` to check against. `codes`: the split's codes if already encoded.
    """
    n_images = len(split)
    if codes is None:
        codes = vq.encode(split["image"])
    if codes.shape[0] != n_images:
        raise TokredError(f"{codes.shape[0]} code rows for a split of {n_images} images")
    und: list[dict[str, Any]] = []
    index: list[int] = []
    gen: list[dict[str, Any]] = []
    for i, (caption, qas, shapes, tasks) in enumerate(
        zip(split["caption"], split["questions"], split["shapes"], served_tasks(split), strict=True)
    ):
        if "understanding" not in tasks:
            qas = []
        if (num_generation is None or len(gen) < num_generation) and "generation" in tasks:
            gen.append(
                {"task": "generation", "prompt": caption, "shapes": shapes, "image_index": i}
            )
        for qa in qas:
            if num_understanding is not None and len(und) >= num_understanding:
                break
            und.append(
                {
                    "task": "understanding",
                    "question": qa["question"],
                    "answer": qa["answer"],
                    "type": question_type(qa["question"]),
                    "image_index": i,
                }
            )
            index.append(i)
    und_codes = codes[torch.tensor(index, dtype=torch.long)] if index else codes[:0]
    return und, und_codes, gen

"""Generation evaluation: greedy (or seeded) sampling of exactly one image's worth of
tokens after the prompt (system, caption, boi), constrained to image-code ids, decoded to
pixels by the VQ tokenizer and checked by the shapes detector for kind, colour and
position: a small GenEval-like score, with the chance level of each attribute (1 / its
values for one shape; a multi-shape prompt is checked cell by cell, see
`generation_chance`).

Decoding goes through `decode.py`; no matplotlib here (`grid.save_sample_grid` draws with
PIL only).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from tokred_core import Task, TokredError
from torch import nn

from ..data.collate import DEFAULT_SYSTEM_PROMPT, encode_sample
from ..data.patch_vq import PatchVQTokenizer
from ..data.shapes.dataset import COLORS, KINDS, POSITIONS
from ..data.shapes.detector import check, check_scene, detect
from .decode import Prompt, decode_batch, index_batches, reduction_context

__all__ = [
    "GENERATION_ATTRIBUTES",
    "GenerationResult",
    "evaluate_generation",
    "generate_image_codes",
    "generation_chance",
    "ImageBlock",
    "image_block",
    "image_writing",
    "score_generated_codes",
]

#: Attributes the generation check reports (plus "all": every one right).
GENERATION_ATTRIBUTES: tuple[str, ...] = ("kind", "color", "position")
_ATTRIBUTE_VALUES = {"kind": KINDS, "color": COLORS, "position": POSITIONS}


def generation_chance(num_shapes: int = 1) -> dict[str, float]:
    """Chance level of each checked attribute (and of 'all') for a prompt of `num_shapes`
    shapes: what a uniform random scene of that many shapes in distinct cells scores.

    One shape is checked on the dominant blob wherever it is, so each attribute's chance
    is 1 / its number of values. Several shapes are checked cell by cell
    (`score_generated_codes`): every named cell must be drawn (1 / C(cells, n)) and, for
    kind and colour, hold the right value too (times 1 / values per shape).
    """
    if not 1 <= num_shapes <= len(POSITIONS):
        raise TokredError(f"num_shapes {num_shapes}: use 1..{len(POSITIONS)}")
    per_shape = {a: 1.0 / len(_ATTRIBUTE_VALUES[a]) for a in GENERATION_ATTRIBUTES}
    if num_shapes == 1:
        chance = dict(per_shape)
        chance["all"] = float(np.prod(list(per_shape.values())))
        return chance
    cells = 1.0 / math.comb(len(POSITIONS), num_shapes)
    chance = {
        a: cells if a == "position" else cells * per_shape[a] ** num_shapes
        for a in GENERATION_ATTRIBUTES
    }
    chance["all"] = (
        cells
        * float(np.prod([per_shape[a] for a in GENERATION_ATTRIBUTES if a != "position"]))
        ** num_shapes
    )
    return chance


def _mean_chance(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean chance over records (each by its number of shapes), so a mixed set of one- and
    two-shape prompts is compared with what guessing would score on that very set."""
    counts = Counter(len(_expected(r, i)) for i, r in enumerate(records))
    if len(counts) == 1:
        return generation_chance(next(iter(counts)))
    total = sum(counts.values())
    levels = {n: generation_chance(n) for n in counts}
    return {
        a: sum(levels[n][a] * k for n, k in counts.items()) / total
        for a in (*GENERATION_ATTRIBUTES, "all")
    }


@dataclass
class GenerationResult:
    accuracy: float
    """Share of images with every checked attribute right ('all')."""
    per_attribute: dict[str, float]
    """kind / color / position accuracy (and 'all')."""
    chance: dict[str, float]
    total: int
    images: np.ndarray
    """(B, H, W, 3) uint8 generated images."""
    codes: torch.Tensor
    """(B, T) generated VQ codes."""
    prompts: list[str]
    checks: list[dict[str, bool]]
    mode: str = ""
    empty: int = 0
    """Generated images in which the detector found no shape at all."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_attribute": self.per_attribute,
            "chance": self.chance,
            "total": self.total,
            "empty_images": self.empty,
            "mode": self.mode,
        }


def _expected(record: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    shapes = record.get("shapes")
    if shapes:
        return [dict(s) for s in shapes]
    found = {a: record[a] for a in GENERATION_ATTRIBUTES if a in record}
    if not found:
        raise TokredError(
            f"generation record {index} has no 'shapes' list and none of "
            f"{', '.join(GENERATION_ATTRIBUTES)}: nothing to check the image against"
        )
    return [found]


def score_generated_codes(
    vq: PatchVQTokenizer,
    codes: torch.Tensor,
    records: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, list[dict[str, bool]], dict[str, float]]:
    """Decode codes to images and check each against its record's shapes.

    Returns (images, per-image checks, per-attribute accuracy incl. 'all'). A one-shape
    record is checked on the dominant blob (`detector.check`); several shapes by cell
    (`detector.check_scene`), where a shape in a cell the prompt does not name is ignored.
    Either way only GENERATION_ATTRIBUTES are checked and 'all' means all of them right
    for every requested shape; size and the number of blobs are not scored.
    """
    if codes.shape[0] != len(records):
        raise TokredError(f"{codes.shape[0]} code rows but {len(records)} records")
    images = (
        vq.decode(codes).numpy() if len(records) else np.zeros((0, *vq.image_size, 3), np.uint8)
    )
    checks = []
    for i, (img, rec) in enumerate(zip(images, records, strict=True)):
        shapes = _expected(rec, i)
        if len(shapes) == 1:
            exp = {a: shapes[0][a] for a in GENERATION_ATTRIBUTES if a in shapes[0]}
            c = check(img, exp)
        else:
            # Keep only the scored attributes: check_scene also compares sizes and counts
            # blobs when asked, which the one-shape check does not.
            c = check_scene(
                img, [{a: s[a] for a in GENERATION_ATTRIBUTES if a in s} for s in shapes]
            )
        mine = {a: bool(c[a]) for a in GENERATION_ATTRIBUTES if a in c}
        mine["all"] = all(mine.values())
        checks.append(mine)
    acc = {}
    for a in (*GENERATION_ATTRIBUTES, "all"):
        vals = [c[a] for c in checks if a in c]
        acc[a] = sum(vals) / len(vals) if vals else 0.0
    return images, checks, acc


def generate_image_codes(
    model: nn.Module,
    vocab: Any,
    vq: Any,
    prompts: Sequence[str],
    *,
    mode: str = "auto",
    policies: Any = None,
    sharing: str = "shared",
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> tuple[torch.Tensor, str]:
    """One image's worth of VQ codes per prompt: ((B, T) codes, the decode mode used).

    Exactly vq.num_tokens_per_image tokens are produced per prompt, each restricted to
    image-code ids (logits outside the code range are masked). temperature 0 is greedy;
    > 0 samples (optionally top-k) from a torch.Generator seeded by `seed`.
    """
    if not prompts:
        raise TokredError("no generation prompts")
    if getattr(vocab, "codebook_size", vq.codebook_size) != vq.codebook_size:
        raise TokredError(
            f"the vocabulary holds {vocab.codebook_size} image codes but the VQ tokenizer has "
            f"{vq.codebook_size}: use the pair saved together"
        )
    encoded = []
    for i, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TokredError(f"generation prompt {i} is {text!r}, not a text")
        s = encode_sample(
            {"task": "generation", "prompt": text}, [], vocab, system_prompt, with_output=False
        )
        encoded.append(Prompt(s.ids, s.spans))
    code_ids, template = image_block(vocab, vq)
    generator = torch.Generator().manual_seed(int(seed)) if temperature > 0 else None
    was_training = model.training
    model.eval()
    rows = []
    try:
        with reduction_context(model, mode, policies, sharing) as resolved:
            for idx in index_batches(len(encoded), batch_size):
                rows.append(
                    decode_batch(
                        model,
                        [encoded[i] for i in idx],
                        Task.GENERATION,
                        len(template),
                        mode=resolved,
                        pad_id=vocab.pad_id,
                        allowed=code_ids,
                        forced=template,
                        temperature=temperature,
                        top_k=top_k,
                        generator=generator,
                    )
                )
    finally:
        model.train(was_training)
    slots = torch.tensor([i for i, fixed in enumerate(template) if fixed is None])
    ids = torch.cat(rows)[:, slots]
    lookup = torch.full((int(code_ids.max()) + 1,), -1, dtype=torch.long)
    lookup[code_ids] = torch.arange(len(code_ids))
    return lookup[ids], resolved


class ImageBlock(NamedTuple):
    """How a vocabulary writes one generated image."""

    code_ids: torch.Tensor
    """(codebook_size,) the token id of each code."""
    template: list[int | None]
    """One entry per id of the block: a fixed id, or None where a code goes."""


def image_block(vocab: Any, vq: Any) -> ImageBlock:
    """How `vocab` writes one generated image: the id of each code and the block template.

    Vocabularies that define `code_token_ids` / `image_token_template` say so themselves
    (Emu3: a size prefix and row ends); otherwise the image ids must be one contiguous
    block of codes (the embedded vocabulary). A TokredError says why when neither holds.
    """
    size, per_image = vq.codebook_size, vq.num_tokens_per_image
    if hasattr(vocab, "code_token_ids") and hasattr(vocab, "image_token_template"):
        code_ids = torch.as_tensor(vocab.code_token_ids()).long().reshape(-1)
        template = list(vocab.image_token_template())
    else:
        offset = int(vocab.image_ids([0])[0])
        code_ids = offset + torch.arange(size)
        template = [None] * per_image
        probe = torch.arange(per_image) % size
        if not torch.equal(
            torch.as_tensor(vocab.image_ids(probe)).reshape(-1).cpu(), offset + probe
        ):
            raise TokredError(
                f"{type(vocab).__name__} writes images as more than one block of code ids and "
                "defines no code_token_ids/image_token_template to say how"
            )
    slots = sum(fixed is None for fixed in template)
    if len(code_ids) != size or slots != per_image:
        raise TokredError(
            f"{type(vocab).__name__}: {len(code_ids)} code ids and {slots} code slots per image, "
            f"but the image tokenizer has {size} codes and {per_image} per image"
        )
    return ImageBlock(code_ids, template)


#: The name this had before it said what it returns (kept for callers of that name).
image_writing = image_block


def evaluate_generation(
    model: nn.Module,
    vocab: Any,
    vq: PatchVQTokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    mode: str = "auto",
    policies: Any = None,
    sharing: str = "shared",
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> GenerationResult:
    """Generate one image per prompt (`generate_image_codes`) and check it with the shapes
    detector (`score_generated_codes`).

    records: dicts with 'prompt' (or 'caption') and the expected 'shapes' (or kind /
    color / position). mode/policies/sharing: see `evaluate_decode`.
    """
    records = list(records)
    if not records:
        raise TokredError("evaluate_generation got no records")
    texts = []
    for i, r in enumerate(records):
        text = r.get("prompt") or r.get("caption")
        if not isinstance(text, str):
            raise TokredError(f"generation record {i} needs a 'prompt' (or 'caption') text")
        _expected(r, i)  # fail before decoding when a record has nothing to check
        texts.append(text)
    codes, resolved = generate_image_codes(
        model,
        vocab,
        vq,
        texts,
        mode=mode,
        policies=policies,
        sharing=sharing,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        batch_size=batch_size,
        system_prompt=system_prompt,
    )
    images, checks, acc = score_generated_codes(vq, codes, records)
    empty = sum(1 for img in images if not detect(img))
    return GenerationResult(
        accuracy=acc["all"],
        per_attribute=acc,
        chance=_mean_chance(records),
        total=len(records),
        images=images,
        codes=codes,
        prompts=texts,
        checks=checks,
        mode=resolved,
        empty=empty,
    )

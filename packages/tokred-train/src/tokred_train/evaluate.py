"""Evaluation of a unified model on both tasks: understanding accuracy and generation checks.

- Understanding: greedy decoding of the answer after the prompt (system, image,
  question), exact match against the reference answer, overall and per question type
  (kind / colour / position / count on the shapes set). Each type states its chance
  level, 1 / (number of distinct answers of that type in the evaluated set), and its
  majority baseline (always answering the most frequent answer), so a number is never
  read without what guessing would score.
- Generation: greedy (or seeded) sampling of exactly one image's worth of tokens after
  the prompt (system, caption, boi), constrained to image-code ids, decoded to pixels by
  the VQ tokenizer and checked by the shapes detector for kind, colour and position: a
  small GenEval-like score, with the chance level of each attribute (1 / its values for
  one shape; a multi-shape prompt is checked cell by cell, see `generation_chance`).

Decoding goes through `evaluate_decode` (see there for "cached" vs "reduced" modes): a
model trained under a reduction is evaluated under that same reduction by default.
No matplotlib here; `save_sample_grid` draws with PIL only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tokred_core import Task, TokredError
from torch import nn

from .data.collate import DEFAULT_SYSTEM_PROMPT, encode_sample
from .data.detector import check, check_scene, detect
from .data.shapes import COLORS, KINDS, POSITIONS
from .data.vocab import UnifiedVocab
from .data.vq import PatchVQTokenizer
from .evaluate_decode import DECODE_MODES, Prompt, decode_batch, reduction_context
from .evaluate_grid import save_sample_grid

__all__ = [
    "DECODE_MODES",
    "GENERATION_ATTRIBUTES",
    "QUESTION_TYPES",
    "GenerationResult",
    "TypeScore",
    "UnderstandingResult",
    "evaluate_generation",
    "evaluate_understanding",
    "exact_match",
    "generate_image_codes",
    "image_writing",
    "generation_chance",
    "normalize_answer",
    "question_type",
    "save_sample_grid",
    "score_answers",
    "score_generated_codes",
    "shapes_eval_records",
]

QUESTION_TYPES: tuple[str, ...] = ("kind", "colour", "position", "count")
#: Attributes the generation check reports (plus "all": every one right).
GENERATION_ATTRIBUTES: tuple[str, ...] = ("kind", "color", "position")
_ATTRIBUTE_VALUES = {"kind": KINDS, "color": COLORS, "position": POSITIONS}
_TYPE_PATTERNS = (
    ("kind", re.compile(r"^\s*what shape\b")),
    ("colour", re.compile(r"^\s*what colou?r\b")),
    ("position", re.compile(r"^\s*where\b")),
    ("count", re.compile(r"^\s*how many\b")),
)


# ---- scoring on strings ---------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, no surrounding whitespace or final punctuation, single spaces."""
    return " ".join(text.strip().lower().rstrip(".!?").split())


def exact_match(prediction: str, answer: str) -> bool:
    """Exact match after `normalize_answer` on both sides."""
    return normalize_answer(prediction) == normalize_answer(answer)


def question_type(question: str) -> str:
    """kind / colour / position / count for the shapes questions, else 'other'."""
    q = question.lower()
    for name, pattern in _TYPE_PATTERNS:
        if pattern.search(q):
            return name
    return "other"


@dataclass
class TypeScore:
    """Accuracy on one question type, with what guessing would score."""

    accuracy: float
    correct: int
    total: int
    num_answers: int
    """Distinct reference answers of this type in the evaluated set."""
    chance: float
    """1 / num_answers: a uniform guess among the possible answers."""
    majority: float
    """Accuracy of always giving this type's most frequent answer."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UnderstandingResult:
    accuracy: float
    """Exact-match accuracy over every question."""
    total: int
    chance: float
    """Mean over questions of their type's chance level."""
    majority: float
    """Accuracy of the per-type majority answer, over every question."""
    per_type: dict[str, TypeScore]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    """question, answer, prediction, type, correct; one per record."""
    mode: str = ""

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "total": self.total,
            "chance": self.chance,
            "majority": self.majority,
            "mode": self.mode,
            "per_type": {k: v.to_dict() for k, v in self.per_type.items()},
        }
        if with_predictions:
            out["predictions"] = self.predictions
        return out


def score_answers(
    questions: Sequence[str],
    answers: Sequence[str],
    predictions: Sequence[str],
    types: Sequence[str] | None = None,
) -> UnderstandingResult:
    """Exact-match accuracy overall and per question type, with chance and majority levels."""
    if not (len(questions) == len(answers) == len(predictions)):
        raise TokredError(
            f"{len(questions)} questions, {len(answers)} answers and {len(predictions)} "
            "predictions: give one of each per record"
        )
    if not questions:
        raise TokredError("no understanding records to score")
    types = list(types) if types is not None else [question_type(q) for q in questions]
    rows = []
    for q, a, p, t in zip(questions, answers, predictions, types, strict=True):
        rows.append(
            {"question": q, "answer": a, "prediction": p, "type": t, "correct": exact_match(p, a)}
        )
    per_type: dict[str, TypeScore] = {}
    for t in dict.fromkeys(types):
        mine = [r for r in rows if r["type"] == t]
        counts = Counter(normalize_answer(r["answer"]) for r in mine)
        correct = sum(r["correct"] for r in mine)
        per_type[t] = TypeScore(
            accuracy=correct / len(mine),
            correct=correct,
            total=len(mine),
            num_answers=len(counts),
            chance=1.0 / len(counts),
            majority=counts.most_common(1)[0][1] / len(mine),
        )
    total = len(rows)
    return UnderstandingResult(
        accuracy=sum(r["correct"] for r in rows) / total,
        total=total,
        chance=sum(per_type[r["type"]].chance for r in rows) / total,
        majority=sum(s.majority * s.total for s in per_type.values()) / total,
        per_type=per_type,
        predictions=rows,
    )


# ---- records --------------------------------------------------------------------------------
def _codes_for(
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
    for i, (caption, qas, shapes) in enumerate(
        zip(split["caption"], split["questions"], split["shapes"], strict=True)
    ):
        if num_generation is None or len(gen) < num_generation:
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


# ---- understanding --------------------------------------------------------------------------
def _batches(n: int, size: int):
    if size < 1:
        raise TokredError(f"batch_size {size}: need at least 1")
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _answer_text(vocab: Any, ids: torch.Tensor) -> str:
    out = []
    for i in ids.tolist():
        if i in (vocab.eos_id, vocab.pad_id):
            break
        out.append(i)
    decode = getattr(vocab, "decode_text", None) or getattr(vocab, "decode", None)
    if decode is None:
        raise TokredError(
            f"{type(vocab).__name__} cannot turn ids back into text (no decode_text): "
            "understanding answers cannot be scored with it"
        )
    return decode(out)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_understanding(
    model: nn.Module,
    vocab: UnifiedVocab,
    codes_or_vq: torch.Tensor | Sequence[Any] | PatchVQTokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    mode: str = "auto",
    policies: Any = None,
    sharing: str = "shared",
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    pixel_values: torch.Tensor | None = None,
) -> UnderstandingResult:
    """Greedy answers to each record's question about its image, scored by exact match.

    records: dicts with question and answer (and optionally type). codes_or_vq: the
    image's VQ codes per record ((R, T) tensor or one sequence each), or the tokenizer,
    then each record needs an 'image'. mode/policies/sharing: see `evaluate_decode`
    (default: under the model's own reduction when it is patched). max_new_tokens: the
    longest reference answer plus eos when None. pixel_values: (R, 3, H, W), one image per
    record, for a model that reads images through its own encoder (passed per batch).
    """
    records = list(records)
    if not records:
        raise TokredError("evaluate_understanding got no records")
    codes = _codes_for(records, codes_or_vq)
    if pixel_values is not None and len(pixel_values) != len(records):
        raise TokredError(f"{len(records)} records but {len(pixel_values)} images in pixel_values")
    prompts = []
    for i, (r, c) in enumerate(zip(records, codes, strict=True)):
        rec = {"task": "understanding", "question": r.get("question"), "answer": r.get("answer")}
        s = encode_sample(rec, c, vocab, system_prompt, with_output=False, index=i)
        prompts.append(Prompt(s.ids, s.spans))
    if max_new_tokens is None:
        max_new_tokens = max(len(vocab.encode_text(str(r.get("answer", "")))) for r in records) + 1
    was_training = model.training
    model.eval()
    predictions: list[str] = []
    try:
        with reduction_context(model, mode, policies, sharing) as resolved:
            for idx in _batches(len(prompts), batch_size):
                out = decode_batch(
                    model,
                    [prompts[i] for i in idx],
                    Task.UNDERSTANDING,
                    max_new_tokens,
                    mode=resolved,
                    pad_id=vocab.pad_id,
                    stop_id=vocab.eos_id,
                    model_kwargs=None
                    if pixel_values is None
                    else {"pixel_values": pixel_values[list(idx)].to(_device_of(model))},
                )
                predictions += [_answer_text(vocab, row) for row in out]
    finally:
        model.train(was_training)
    result = score_answers(
        [str(r["question"]) for r in records],
        [str(r["answer"]) for r in records],
        predictions,
        [r.get("type") or question_type(str(r["question"])) for r in records],
    )
    result.mode = resolved
    return result


# ---- generation -----------------------------------------------------------------------------
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
    code_ids, template = image_writing(vocab, vq)
    generator = torch.Generator().manual_seed(int(seed)) if temperature > 0 else None
    was_training = model.training
    model.eval()
    rows = []
    try:
        with reduction_context(model, mode, policies, sharing) as resolved:
            for idx in _batches(len(encoded), batch_size):
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


def image_writing(vocab: Any, vq: Any) -> tuple[torch.Tensor, list[int | None]]:
    """How `vocab` writes one generated image: (the id of each code, (codebook_size,);
    the block template, one entry per id: a fixed id, or None where a code goes).

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
    return code_ids, template


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

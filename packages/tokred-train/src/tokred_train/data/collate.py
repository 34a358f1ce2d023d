"""Collation: records + VQ codes -> padded token ids, labels and a `TokenLayout`.

The paper's sequences (PAPER.md, section 1), with our placement of the delimiters:

    understanding:  SYSTEM [bos, system...]  IMAGE [boi, codes..., eoi]
                    INSTRUCTION [question...]  OUTPUT [answer..., eos]
    generation:     SYSTEM [bos, system...]  INSTRUCTION [prompt..., boi]
                    OUTPUT [codes..., eoi]

Why the delimiters sit there:
- Understanding: boi/eoi bracket the input image and belong to the IMAGE segment, so a
  policy that treats the image specially (HiMix keeps it only as keys/values) treats
  the whole bracketed block alike; they carry no loss.
- Generation: boi is *given* (the prompt ends with it, and at inference the model is fed
  the prompt up to boi and then samples codes), so it is INSTRUCTION. eoi is *predicted*
  (the model must learn where the image ends), so it is OUTPUT with the codes. There is
  no IMAGE segment: the generated image is the output (TokenLayout enforces this).
- bos starts the SYSTEM segment; eos ends the understanding answer and is a target.

The image block is `vocab.image_ids(codes)` for a generated image and
`vocab.input_image_ids(codes)` (when the vocabulary has it) for an understood one: the two
differ for a model that reads images through its own encoder (Janus: placeholders).
`image_code_mask` flags the positions holding a generated image's `image_ids`, for a model
whose image ids are not in its text vocabulary (Janus: raw codes, predicted by a head
of their own).

Labels equal input_ids on OUTPUT tokens and are -100 elsewhere (prompt, image input,
padding). The causal shift (logits at i predict the token at i+1) is the model's job,
as in Hugging Face causal LMs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokred_core import Segment, Task, TokenLayout, TokredError, parse_task

from .protocols import TokenVocab

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "IGNORE_INDEX",
    "EncodedSample",
    "encode_sample",
    "collate",
]

DEFAULT_SYSTEM_PROMPT = "you are a model that answers questions about images and draws them."
#: Label of a position without loss (PyTorch's cross_entropy default ignore_index).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedSample:
    """One sample's token ids and its (segment, count) spans, in order."""

    task: Task
    ids: list[int]
    spans: list[tuple[Segment, int]]
    image_codes: tuple[int, int] = (0, 0)
    """(start, count) in `ids` of the generated image's `image_ids` (count 0: none)."""


def _text(record: Mapping[str, Any], key: str, index: int) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise TokredError(
            f"record {index} ({record.get('task')}) needs a text field {key!r}, got {value!r}"
        )
    return value


def encode_sample(
    record: Mapping[str, Any],
    codes: torch.Tensor | Sequence[int],
    vocab: TokenVocab,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    with_output: bool = True,
    index: int = 0,
) -> EncodedSample:
    """Token ids and spans of one record (see the module docstring for the layout).

    with_output=False gives the inference prompt: everything before OUTPUT (for
    generation it ends with boi; `codes` are then ignored and may be empty).
    """
    task = parse_task(record.get("task", ""))
    system = [vocab.bos_id, *vocab.encode_text(system_prompt)]
    spans: list[tuple[Segment, int]] = [(Segment.SYSTEM, len(system))]
    ids = list(system)
    image_codes = (0, 0)
    if task == Task.UNDERSTANDING:
        read = getattr(vocab, "input_image_ids", vocab.image_ids)
        image = [vocab.boi_id, *read(codes).tolist(), vocab.eoi_id]
        question = vocab.encode_text(_text(record, "question", index))
        ids += image + question
        spans += [(Segment.IMAGE, len(image)), (Segment.INSTRUCTION, len(question))]
        if with_output:
            answer = vocab.encode_text(_text(record, "answer", index), add_eos=True)
            ids += answer
            spans.append((Segment.OUTPUT, len(answer)))
    else:
        prompt = [*vocab.encode_text(_text(record, "prompt", index)), vocab.boi_id]
        ids += prompt
        spans.append((Segment.INSTRUCTION, len(prompt)))
        if with_output:
            image = [*vocab.image_ids(codes).tolist(), vocab.eoi_id]
            image_codes = (len(ids), len(image) - 1)
            ids += image
            spans.append((Segment.OUTPUT, len(image)))
    return EncodedSample(task, ids, spans, image_codes)


def _as_records(
    records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
) -> list[Mapping[str, Any]]:
    """Accept a list of dicts or a `datasets` batch (dict of equal-length columns)."""
    if isinstance(records, Mapping):
        lengths = {len(v) for v in records.values()}
        if len(lengths) > 1:
            raise TokredError(f"batch columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in records.items()} for i in range(n)]
    return list(records)


def collate(
    records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    vocab: TokenVocab,
    vq_codes: torch.Tensor | Sequence[torch.Tensor | Sequence[int]],
    padding_side: str = "right",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Build a padded batch that may mix both tasks.

    records: dicts (or a `datasets` batch) with `task` and the text fields of that task
    (understanding: question, answer; generation: prompt). vq_codes: the image codes of
    each record, a (B, T) tensor or one 1-D sequence per record (the input image for
    understanding, the target image for generation).

    Returns input_ids (B, N) long, labels (B, N) long (-100 off the OUTPUT segment),
    attention_mask (B, N) long, image_code_mask (B, N) bool (a generated image's
    `image_ids`) and layout (a `TokenLayout`). A sample longer than
    max_length is an error: truncating image tokens would corrupt the image.
    """
    recs = _as_records(records)
    if not recs:
        raise TokredError("collate got no records")
    if len(vq_codes) != len(recs):
        raise TokredError(f"{len(recs)} records but {len(vq_codes)} code rows: give one per record")
    if padding_side not in ("left", "right"):
        raise TokredError(f"padding_side {padding_side!r}: expected 'left' or 'right'")
    samples = [
        encode_sample(r, vq_codes[i], vocab, system_prompt, index=i) for i, r in enumerate(recs)
    ]
    longest = max(len(s.ids) for s in samples)
    if max_length is not None and longest > max_length:
        bad = next(i for i, s in enumerate(samples) if len(s.ids) > max_length)
        raise TokredError(
            f"sample {bad} has {len(samples[bad].ids)} tokens, over max_length {max_length}; "
            "raise max_length or shorten its text"
        )
    layout = TokenLayout.from_spans(
        [s.spans for s in samples],
        [s.task for s in samples],
        length=longest,
        padding_side=padding_side,
    )
    input_ids = torch.full((len(samples), longest), vocab.pad_id, dtype=torch.long)
    image_code_mask = torch.zeros((len(samples), longest), dtype=torch.bool)
    for b, s in enumerate(samples):
        row = torch.tensor(s.ids, dtype=torch.long)
        offset = 0 if padding_side == "right" else longest - len(s.ids)
        input_ids[b, offset : offset + len(s.ids)] = row
        start, count = s.image_codes
        image_code_mask[b, offset + start : offset + start + count] = True
    target = layout.target_mask()
    labels = torch.where(target, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": layout.valid_mask().long(),
        "image_code_mask": image_code_mask,
        "layout": layout,
    }

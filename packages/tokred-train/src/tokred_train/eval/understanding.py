"""Understanding evaluation: greedy decoding of the answer after the prompt (system, image,
question), scored by exact match against the reference answer (`answers.py`).

Decoding goes through `decode.py` (see there for "cached" vs "reduced" modes): a model
trained under a reduction is evaluated under that same reduction by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokred_core import Task, TokredError
from torch import nn

from ..data.collate import DEFAULT_SYSTEM_PROMPT, encode_sample
from ..data.patch_vq import PatchVQTokenizer
from ..data.vocab import UnifiedVocab
from .answers import UnderstandingResult, question_type, score_answers
from .decode import Prompt, decode_batch, index_batches, model_device, reduction_context
from .records import codes_for

__all__ = ["evaluate_understanding"]


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
    codes = codes_for(records, codes_or_vq)
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
            for idx in index_batches(len(prompts), batch_size):
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
                    else {"pixel_values": pixel_values[list(idx)].to(model_device(model))},
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

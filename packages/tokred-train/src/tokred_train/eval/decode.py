"""Batched autoregressive decoding for evaluation, with or without a token reduction.

Two ways to run the decoder, picked by `mode`:

- ``"cached"``: the plain Hugging Face forward with a KV cache (the prompt once, then one
  token per step). On a model patched by `apply_reduction` this runs the *original* layer
  forwards: the unreduced model, without any image projection sets the reduction added.
- ``"reduced"``: no KV cache. Every step calls the model on the whole sequence so far,
  with a `tokred_layout` built for its current length (prompt segments, then OUTPUT for the
  tokens generated so far). This is the only way to decode *through* a reduction: a
  reduced forward cannot continue a cache (HiMix recomputes image keys/values from the
  layer-0 embeddings, HMGen lets image tokens skip layers, so cached keys would be wrong).
  An unpatched model with no policies is run the same way without a layout (a slow but
  exact reference for the cached path).
- ``"auto"`` (default): ``"reduced"`` when the model is patched with a reduction (or
  policies are given), else ``"cached"``. A patch that changes nothing (policy `none` for
  both tasks, sharing `shared`, as in a baseline run) counts as unpatched: its reduced
  forward equals the plain one, so the faster cached path is exact. Evaluate a model trained with a reduction under that same reduction:
  pass the model still patched (train() leaves it patched) or its policies.

Every policy acts on image tokens only (text always runs in full, through the base
projections), so a step whose sequence holds no image token yet (the first step of
generation: the prompt ends with boi) runs as the plain forward in either mode.

Batches are left-padded so every row's next token is predicted at the last position;
RoPE positions come from the layout (padding does not shift them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tokred_core import Segment, Task, TokenLayout, TokredError
from tokred_models import reduction_handle
from torch import nn

__all__ = [
    "DECODE_MODES",
    "DecodeMode",
    "Prompt",
    "decode_batch",
    "reduction_context",
    "is_patched",
    "index_batches",
    "model_device",
]

DecodeMode = Literal["auto", "reduced", "cached"]
DECODE_MODES: tuple[str, ...] = ("auto", "reduced", "cached")


@dataclass(frozen=True)
class Prompt:
    """One inference prompt: its ids and (segment, count) spans (from encode_sample)."""

    ids: list[int]
    spans: list[tuple[Segment, int]]


def is_patched(model: nn.Module) -> bool:
    """True when `apply_reduction` patched this model (its handle is attached)."""
    return reduction_handle(model) is not None


@contextmanager
def reduction_context(
    model: nn.Module,
    mode: str = "auto",
    policies: Any = None,
    sharing: str = "shared",
) -> Iterator[str]:
    """Resolve `mode` and, where needed, patch the model for the duration.

    Yields the resolved mode ("reduced" or "cached"). With `policies` on a patched model
    its policies are swapped for the duration; on an unpatched one the model is patched
    with them (and `sharing`) and unpatched afterwards. Policies need mode reduced/auto.
    """
    if mode not in DECODE_MODES:
        raise TokredError(f"decode mode {mode!r}: expected one of {', '.join(DECODE_MODES)}")
    patched = is_patched(model)
    if policies is not None and mode == "cached":
        raise TokredError(
            "decode mode 'cached' runs the unreduced model and cannot apply policies; "
            "use mode 'reduced' (or 'auto') to evaluate under a reduction"
        )
    if mode != "auto":
        resolved = mode
    elif policies is not None:
        resolved = "reduced"
    else:
        resolved = "reduced" if patched and not _is_identity(reduction_handle(model)) else "cached"
    if policies is None:
        yield resolved
        return
    if patched:
        handle = reduction_handle(model)
        before = handle.policies
        handle.set_policies(policies)
        try:
            yield resolved
        finally:
            handle.policies = before
        return
    from tokred_models import apply_reduction

    handle = apply_reduction(model, policies, sharing)
    try:
        yield resolved
    finally:
        handle.undo()


def _is_identity(handle: Any) -> bool:
    """A patch that changes nothing: every task runs `none` and images share the text
    projections. Its reduced forward equals the plain one, so the KV cache is safe."""
    sharing = getattr(getattr(handle, "sharing", None), "value", None)
    policies = getattr(getattr(handle, "policies", None), "policies", None)
    if sharing != "shared" or not isinstance(policies, Mapping):
        return False
    return all(getattr(p, "name", None) == "none" for p in policies.values())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, n - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[b, n - len(r) :] = 1
    return ids, mask


Allowed = tuple[int, int] | torch.Tensor


def _pick(
    logits: torch.Tensor,
    allowed: Allowed | None,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) next ids: greedy (temperature 0) or seeded sampling."""
    logits = logits.float()
    if allowed is not None:
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        if isinstance(allowed, torch.Tensor):
            keep[allowed.to(logits.device)] = True
        else:
            lo, hi = allowed
            keep[lo:hi] = True
        logits = logits.masked_fill(~keep, float("-inf"))
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def _last_logits(out: Any) -> torch.Tensor:
    logits = out.logits if hasattr(out, "logits") else out["logits"]
    return logits[:, -1]


def _whole_sequence(
    model: nn.Module,
    rows: list[list[int]],
    spans: list[list[Any]],
    task: Task,
    step: int,
    mode: str,
    pad_id: int,
    **extra: Any,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One forward over every row's prompt plus the `step` ids decoded so far, left-padded:
    (the model's output, the attention mask, the position ids). In "reduced" mode the
    patched model runs it under its reduction; in "cached" mode it fills the KV cache."""
    device = model_device(model)
    ids, mask = _left_pad(rows, pad_id)
    layout = TokenLayout.from_spans(
        [s + ([(Segment.OUTPUT, step)] if step else []) for s in spans],
        [task] * len(rows),
        length=ids.shape[1],
        padding_side="left",
    )
    positions = layout.position_ids()
    kwargs: dict[str, Any] = dict(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=1,
    )
    if mode == "reduced":
        kwargs["use_cache"] = False
        # No image token yet (first generation step): every policy plans the full
        # forward for text, so the plain call is the reduced one.
        if is_patched(model) and bool(layout.image_mask().any()):
            kwargs["tokred_layout"] = layout
    else:
        kwargs["use_cache"] = True
    return model(**kwargs, **extra), mask, positions


@torch.no_grad()
def decode_batch(
    model: nn.Module,
    prompts: Sequence[Prompt],
    task: Task,
    max_new_tokens: int,
    *,
    mode: str = "cached",
    pad_id: int = 0,
    stop_id: int | None = None,
    allowed: Allowed | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    forced: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """Decode `max_new_tokens` after each prompt; returns (B, max_new_tokens) ids.

    mode: "reduced" or "cached" (resolve "auto" with `reduction_context`). stop_id ends
    decoding early once every row has produced it (later ids in a row are meaningless).
    allowed: only these ids may be produced: (lo, hi) for [lo, hi), or a tensor of ids
    (image codes for generation). forced[step]: an id every row takes at that step (the
    fixed ids of an image block, e.g. Emu3's row ends), None to pick one.
    """
    if forced is not None and len(forced) < max_new_tokens:
        raise TokredError(f"forced names {len(forced)} steps of {max_new_tokens}")
    if mode not in ("reduced", "cached"):
        raise TokredError(f"decode_batch mode {mode!r}: expected 'reduced' or 'cached'")
    if not prompts:
        return torch.zeros((0, max_new_tokens), dtype=torch.long)
    extra = dict(model_kwargs or {})
    device = model_device(model)
    rows = [list(p.ids) for p in prompts]
    spans = [list(p.spans) for p in prompts]
    out_ids = torch.full((len(prompts), max_new_tokens), pad_id, dtype=torch.long)
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    past = None
    mask = positions = None
    for step in range(max_new_tokens):
        if mode == "reduced" or step == 0:
            out, mask, positions = _whole_sequence(
                model, rows, spans, task, step, mode, pad_id, **extra
            )
            past = getattr(out, "past_key_values", None) if mode == "cached" else None
        else:
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(
                input_ids=out_ids[:, step - 1 : step].to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
            past = out.past_key_values
        if forced is not None and forced[step] is not None:
            nxt = torch.full((len(rows),), int(forced[step]), dtype=torch.long)
        else:
            nxt = _pick(_last_logits(out), allowed, temperature, top_k, generator).cpu()
        out_ids[:, step] = nxt
        for b in range(len(rows)):
            rows[b].append(int(nxt[b]))
        if stop_id is not None:
            finished |= nxt == stop_id
            if bool(finished.all()):
                break
    return out_ids


def index_batches(n: int, size: int) -> Iterator[range]:
    """Ranges of at most `size` indices covering 0..n-1 in order."""
    if size < 1:
        raise TokredError(f"batch_size {size}: need at least 1")
    for start in range(0, n, size):
        yield range(start, min(n, start + size))

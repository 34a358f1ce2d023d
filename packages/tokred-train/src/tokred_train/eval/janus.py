"""Janus as a one-task causal LM, so evaluation's decoding loop runs it unchanged.

Why: `evaluate_decode.decode_batch` decodes any model that maps input_ids to next-token
logits, with a KV cache or, under a reduction, by re-running the whole sequence. Janus
reads its two tasks through different paths: an understanding prompt holds image
placeholders filled from SigLIP pixels and is answered through `lm_head`; a generation
prompt ends with `<begin_of_image>` and continues with VQ codes, embedded through
`generation_embeddings`/`generation_aligner` and predicted through `generation_head`.
`JanusForDecoding(janus, task)` is that path for one task:

- understanding: `pixel_values` (one image per prompt, in batch order) come with every
  full-sequence call (decode_batch's model_kwargs); a call continuing the KV cache reads
  one new text token and no pixels. Logits: `lm_head`, over the text vocabulary.
- generation: every position after a row's first `<begin_of_image>` is a code (the prompt
  holds none before its last token, and codes that share the marker's id come after
  it), and a call continuing the cache reads one code. Logits: `generation_head`, over
  the codebook, so generated ids are the codes themselves.
- classifier-free guidance (generation, `cfg_weight`): as Janus samples, every prompt is
  run twice, as is and with its text between the first token and `<begin_of_image>`
  replaced by padding ids, and the logits are uncond + w * (cond - uncond). The two
  halves share one KV cache of 2B rows and one reduction plan per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
from tokred_core import Task, TokredError
from torch import nn

__all__ = ["JanusForDecoding"]


@dataclass
class _Call:
    """The language-model arguments of one decoding call, besides the tokens."""

    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    past_key_values: Any
    use_cache: bool
    logits_to_keep: int
    layout_kwargs: dict[str, Any]

    def doubled(self, rows: int) -> _Call:
        """The same call for the batch stacked on itself (conditional, then unconditional)."""

        def twice(t):
            return None if t is None else torch.cat([t, t])

        layout = dict(self.layout_kwargs)
        if layout.get("tokred_layout") is not None:  # one plan per prompt, for both halves
            layout["tokred_layout"] = layout["tokred_layout"].select(torch.arange(2 * rows) % rows)
        return replace(
            self,
            attention_mask=twice(self.attention_mask),
            position_ids=twice(self.position_ids),
            layout_kwargs=layout,
        )


class JanusForDecoding(nn.Module):
    def __init__(
        self,
        janus: nn.Module,
        task: Task,
        boi_id: int,
        cfg_weight: float | None = None,
        pad_id: int | None = None,
    ):
        super().__init__()
        if type(janus).__name__ != "JanusForConditionalGeneration":
            raise TokredError(
                f"JanusForDecoding needs a JanusForConditionalGeneration, got {type(janus).__name__}"
            )
        self.janus = janus
        self.task = Task(task)
        self.boi_id = int(boi_id)
        if cfg_weight is not None and (self.task != Task.GENERATION or pad_id is None):
            raise TokredError("classifier-free guidance is for generation and needs pad_id")
        self.cfg_weight = None if cfg_weight is None else float(cfg_weight)
        self.pad_id = pad_id
        from tokred_models.patch import HANDLE_ATTR, reduction_handle

        handle = reduction_handle(janus)
        if handle is not None:  # decoding sees the reduction the model is patched with
            object.__setattr__(self, HANDLE_ATTR, handle)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        pixel_values: torch.Tensor | None = None,
        **layout_kwargs: Any,
    ) -> SimpleNamespace:
        call = _Call(
            attention_mask, position_ids, past_key_values, use_cache, logits_to_keep, layout_kwargs
        )
        if self.cfg_weight is not None:
            return self._guided(input_ids, call)
        return self._forward(input_ids, pixel_values, call)

    def _guided(self, input_ids: torch.Tensor, call: _Call) -> SimpleNamespace:
        rows = input_ids.shape[0]
        uncond = input_ids.clone()
        if call.past_key_values is None:
            # Blank the prompt text: after the first real token, before the first marker.
            boi = (input_ids == self.boi_id).long().cumsum(1) > 0
            mask = call.attention_mask
            real = mask.bool() if mask is not None else torch.ones_like(boi)
            first = real.long().cumsum(1) == 1
            uncond[real & ~first & ~boi] = self.pad_id
        out = self._forward(torch.cat([input_ids, uncond]), None, call.doubled(rows))
        cond, free = out.logits[:rows], out.logits[rows:]
        return SimpleNamespace(
            logits=free + self.cfg_weight * (cond - free), past_key_values=out.past_key_values
        )

    def _forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, call: _Call
    ) -> SimpleNamespace:
        from tokred_models.janus_generation import janus_input_embeddings

        generation = self.task == Task.GENERATION
        codes = torch.zeros_like(input_ids, dtype=torch.bool)
        if call.past_key_values is None:  # the whole sequence so far
            if generation:
                boi = (input_ids == self.boi_id).long()
                if bool((boi.sum(1) == 0).any()):
                    raise TokredError("a generation prompt must end with the begin-of-image id")
                # 1 strictly after the first marker: cumsum reaches 1 at it, stays >= 1 after.
                seen = boi.cumsum(1) > 0
                codes = seen & ~(seen.cumsum(1) == 1)
            pixels = None if generation else pixel_values
        else:  # one new token on top of the cache
            codes[:] = generation
            pixels = None
        embeds = janus_input_embeddings(self.janus, input_ids, codes, pixels)
        out = self.janus.model.language_model(
            inputs_embeds=embeds,
            attention_mask=call.attention_mask,
            position_ids=call.position_ids,
            past_key_values=call.past_key_values,
            use_cache=call.use_cache,
            **call.layout_kwargs,
        )
        hidden = out.last_hidden_state
        if call.logits_to_keep:
            hidden = hidden[:, -call.logits_to_keep :]
        head = self.janus.model.generation_head if generation else self.janus.lm_head
        return SimpleNamespace(logits=head(hidden), past_key_values=out.past_key_values)

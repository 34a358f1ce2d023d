"""Janus generation training: the next-token loss on image codes that Hugging Face lacks.

`JanusForConditionalGeneration.forward` computes a loss only on text. Janus generates
images through a separate path: VQ codes -> `generation_embeddings` -> `generation_aligner`
-> language model -> `generation_head` (logits over the codebook). `janus_unified_forward`
runs both tasks in one batch through the one language model, so a Janus model trains on
understanding (text loss through `lm_head`) and generation (code loss through
`generation_head`) together, under any tokred reduction plan.

Batch convention (built by tokred-train's collation):
- `input_ids` (B, N): text ids; `image_token_id` placeholders where understanding images go
  (filled from `pixel_values` through the SigLIP encoder and aligner, as Janus does);
  VQ code ids at generation image positions, flagged by `image_code_mask`.
- `text_labels` (B, N): target text ids at text positions carrying loss, -100 elsewhere.
- `image_labels` (B, N): target VQ codes at generation image positions, -100 elsewhere.
Position t predicts position t+1: the head used at t is the one of the *next* token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokred_core import TokenLayout, TokredError
from torch import nn

from .patch import LAYOUT_KWARG
from .spmd import zero_touch

__all__ = [
    "JanusUnifiedOutput",
    "janus_unified_forward",
    "janus_hidden_states",
    "janus_input_embeddings",
]

IGNORE = -100


@dataclass
class JanusUnifiedOutput:
    loss: torch.Tensor
    text_loss: torch.Tensor | None
    image_loss: torch.Tensor | None
    hidden_states: torch.Tensor


def janus_input_embeddings(
    model: nn.Module,
    input_ids: torch.Tensor,
    image_code_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text embeddings, SigLIP features at image placeholders, aligned code embeddings."""
    janus = model.model
    if image_code_mask.shape != input_ids.shape:
        raise TokredError(
            f"image_code_mask shape {tuple(image_code_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
        )
    text_ids = input_ids.masked_fill(image_code_mask, 0)
    embeds = janus.get_input_embeddings()(text_ids)
    placeholders = (input_ids == model.config.image_token_id) & ~image_code_mask
    n_placeholders = int(placeholders.sum())
    if pixel_values is None:
        if n_placeholders:
            raise TokredError("input_ids hold image placeholders but no pixel_values were given")
        # No understanding image here. The vision encoder cannot run on zero images (its
        # attention reshapes by -1), so it joins the graph with zero gradients instead
        # (spmd.py); the code embeddings below run on zero codes.
        embeds = embeds + zero_touch(janus.vision_model, embeds) + zero_touch(janus.aligner, embeds)
    else:
        feats = janus.get_image_features(pixel_values).pooler_output
        feats = feats.reshape(-1, embeds.shape[-1])
        if feats.shape[0] != n_placeholders:
            raise TokredError(
                f"{n_placeholders} image placeholder tokens but {feats.shape[0]} image features"
            )
        embeds = embeds.masked_scatter(placeholders[..., None], feats.to(embeds.dtype))
    codes = input_ids[image_code_mask]
    num_codes = janus.generation_embeddings.num_embeddings
    if codes.numel() and (int(codes.max()) >= num_codes or int(codes.min()) < 0):
        raise TokredError(
            f"image codes must lie in 0..{num_codes - 1}, got {int(codes.min())}..{int(codes.max())}"
        )
    code_embeds = janus.generation_aligner(janus.generation_embeddings(codes))
    embeds = embeds.masked_scatter(image_code_mask[..., None], code_embeds.to(embeds.dtype))
    return embeds


def _head_loss(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor | None):
    """Cross-entropy of head(hidden at t) against labels at t+1, computed only where a
    target exists (the text head never sees code positions and vice versa).
    Returns (mean loss or None, number of targets)."""
    if labels is None:
        return None, 0
    target = labels[:, 1:]
    keep = target != IGNORE
    n = int(keep.sum())
    if n == 0:
        return None, 0
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep]), n


def janus_hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    image_code_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    layout: TokenLayout | None = None,
) -> torch.Tensor:
    """(B, N, hidden) last hidden states of the language model over the unified batch; the
    caller applies `lm_head` (text targets) and `model.model.generation_head` (codes)."""
    embeds = janus_input_embeddings(model, input_ids, image_code_mask, pixel_values)
    kwargs = {LAYOUT_KWARG: layout} if layout is not None else {}
    out = model.model.language_model(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **kwargs,
    )
    return out.last_hidden_state


def janus_unified_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    image_code_mask: torch.Tensor,
    text_labels: torch.Tensor | None = None,
    image_labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    layout: TokenLayout | None = None,
) -> JanusUnifiedOutput:
    """One forward of both tasks; the loss is the token-weighted mean over text and code targets."""
    hidden = janus_hidden_states(
        model, input_ids, image_code_mask, attention_mask, pixel_values, position_ids, layout
    )
    text_loss, n_text = _head_loss(model.lm_head, hidden, text_labels)
    image_loss, n_image = _head_loss(model.model.generation_head, hidden, image_labels)
    if text_loss is None and image_loss is None:
        raise TokredError("the batch has no text or image targets to compute a loss on")
    total = n_text + n_image
    loss = sum(
        part * (n / total)
        for part, n in ((text_loss, n_text), (image_loss, n_image))
        if part is not None
    )
    return JanusUnifiedOutput(loss, text_loss, image_loss, hidden)

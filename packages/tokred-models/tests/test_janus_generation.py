"""Janus trains on both tasks: text loss through lm_head, code loss through generation_head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokred_core import TokenLayout, TokredError, build_policy
from tokred_models import apply_reduction
from tokred_models.janus_generation import janus_input_embeddings, janus_unified_forward
from tokred_models.testing import IMAGE_TOKEN_ID as IMAGE_TOKEN
from tokred_models.testing import build

NUM_CODES = 16  # its VQ codebook size


def tiny_janus():
    model = build("janus")
    assert model.config.image_token_id == IMAGE_TOKEN
    assert model.model.generation_embeddings.num_embeddings == NUM_CODES
    return model


def batch():
    """Sample 0: understanding with 4 image placeholders; sample 1: generation of 5 codes."""
    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("image", 4), ("instruction", 2), ("output", 3)],
            [("system", 2), ("instruction", 3), ("output", 5)],
        ],
        ["understanding", "generation"],
    )
    n = layout.seq_len
    ids = torch.randint(3, 80, (2, n))
    ids[0, 2:6] = IMAGE_TOKEN
    code_mask = torch.zeros(2, n, dtype=torch.bool)
    code_mask[1, 5:10] = True
    ids[1, 5:10] = torch.randint(0, NUM_CODES, (5,))
    valid = layout.valid_mask()
    ids[~valid] = 0
    text_labels = torch.full_like(ids, -100)
    text_labels[0, 8:11] = ids[0, 8:11]
    image_labels = torch.full_like(ids, -100)
    image_labels[code_mask] = ids[code_mask]
    pixels = torch.randn(1, 3, 16, 16)
    return layout, ids, code_mask, text_labels, image_labels, valid.long(), pixels


def test_unified_loss_matches_manual_heads_and_reaches_generation_modules():
    model = tiny_janus()
    layout, ids, code_mask, tl, il, am, px = batch()
    out = janus_unified_forward(model, ids, code_mask, tl, il, am, px)
    # Manual: same embeddings, plain language model, each head on its own targets.
    emb = janus_input_embeddings(model, ids, code_mask, px)
    h = model.model.language_model(inputs_embeds=emb, attention_mask=am).last_hidden_state
    t_logits = model.lm_head(h[0, 7:10])
    i_logits = model.model.generation_head(h[1, 4:9])
    t_loss = F.cross_entropy(t_logits, ids[0, 8:11])
    i_loss = F.cross_entropy(i_logits, ids[1, 5:10])
    torch.testing.assert_close(out.text_loss, t_loss)
    torch.testing.assert_close(out.image_loss, i_loss)
    torch.testing.assert_close(out.loss, (3 * t_loss + 5 * i_loss) / 8)
    out.loss.backward()
    janus = model.model
    for module in (
        janus.generation_embeddings,
        janus.generation_aligner,
        janus.generation_head,
        janus.aligner,
    ):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_unified_forward_under_reduction_changes_loss_and_still_trains():
    model = tiny_janus()
    layout, ids, code_mask, tl, il, am, px = batch()
    base = janus_unified_forward(model, ids, code_mask, tl, il, am, px).loss
    policies = {"understanding": "himix", "generation": build_policy("hmgen", num_shallow=1)}
    handle = apply_reduction(model, policies, "task")
    out = janus_unified_forward(model, ids, code_mask, tl, il, am, px, layout=layout)
    assert torch.isfinite(out.loss) and not torch.allclose(out.loss, base)
    out.loss.backward()
    image_k = model.model.language_model.layers[0].self_attn.image_proj["generation"].k_proj.weight
    assert image_k.grad is not None and image_k.grad.abs().sum() > 0
    handle.undo()
    handle = apply_reduction(model, "none", "task")
    none_loss = janus_unified_forward(model, ids, code_mask, tl, il, am, px, layout=layout).loss
    handle.undo()
    torch.testing.assert_close(none_loss, base, rtol=1e-5, atol=1e-6)


def test_bad_codes_and_missing_pixels_are_named():
    model = tiny_janus()
    layout, ids, code_mask, tl, il, am, px = batch()
    bad = ids.clone()
    bad[1, 6] = NUM_CODES + 3
    with pytest.raises(TokredError, match="image codes must lie in 0..15"):
        janus_unified_forward(model, bad, code_mask, tl, il, am, px)
    with pytest.raises(TokredError, match="no pixel_values"):
        janus_unified_forward(model, ids, code_mask, tl, il, am, None)

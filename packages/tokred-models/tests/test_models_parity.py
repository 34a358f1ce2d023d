"""Policy `none` is the unpatched model, for every supported architecture and sharing mode.

The image projection sets are fresh copies of the text projections, so with every token
ACTIVE the logits must not move. Gradients split: with copies, the text projection sees
only text rows and each image set only its own rows, so text grad + image set grads equals
the unpatched projection's grad (the grad of a linear map is a sum over its input rows).
"""

from __future__ import annotations

import re

import pytest
import torch
from tokred_core import image_sets
from tokred_models import adapter_for, apply_reduction
from tokred_models.testing import (
    ARCHITECTURES,
    build,
    grads,
    logit_loss,
    loss_weights,
    mixed_layout,
    random_ids,
    rel_err,
    run,
)

SHARINGS = ("shared", "modality", "task")
PROJ = re.compile(r"^(?P<attn>.*)\.(?P<proj>[qkv]_proj)\.(?P<kind>weight|bias)$")
TOL = 1e-5


def _reference(model, ids, layout):
    valid = layout.valid_mask()
    weights = loss_weights((*ids.shape, model.get_output_embeddings().weight.shape[0]))
    model.zero_grad(set_to_none=True)
    logits = run(model, ids, attention_mask=valid.long())
    logit_loss(logits, valid, weights).backward()
    return logits.detach(), grads(model), weights


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_none_policy_matches_unpatched_logits_and_grads(arch):
    model = build(arch)
    layout = mixed_layout()
    ids = random_ids(layout)
    valid = layout.valid_mask()
    ref_logits, ref_grads, weights = _reference(model, ids, layout)
    adapter = adapter_for(model)
    attn_modules = {id(adapter.attention(layer)) for layer in adapter.layers(model)}
    attn_names = {n for n, m in model.named_modules() if id(m) in attn_modules}
    assert layout.seq_len > 5  # longer than the sliding windows of qwen2 / mistral

    for sharing in SHARINGS:
        handle = apply_reduction(model, "none", sharing)
        model.zero_grad(set_to_none=True)
        logits = run(model, ids, layout)
        err = rel_err(logits, ref_logits, valid)
        assert err <= TOL, f"{arch}/{sharing}: logits differ, rel err {err:.2e}"
        logit_loss(logits, valid, weights).backward()
        got = grads(model)

        sets = image_sets(sharing)
        image_names = {n for n in got if ".image_proj." in n}
        assert set(got) - image_names == set(ref_grads), "patching added or lost parameters"
        # 3 projections x (weight [+ bias]) x sets x layers
        n_layers = len(adapter_for(model).layers(model))
        per_proj = 2 if arch == "qwen2" else 1
        assert len(image_names) == 3 * per_proj * len(sets) * n_layers

        for name, ref in ref_grads.items():
            g = got[name]
            m = PROJ.match(name)
            if m and m["attn"] in attn_names and sets:
                text_only = g
                image = [got[f"{m['attn']}.image_proj.{s}.{m['proj']}.{m['kind']}"] for s in sets]
                for s, gi in zip(sets, image, strict=True):
                    # Every set serves rows in this batch, so each gets a gradient ...
                    assert gi.abs().sum() > 0, (
                        f"{arch}/{sharing}: image set {s} of {name} got no grad"
                    )
                # ... and the text projection alone no longer gets the full one.
                assert rel_err(text_only, ref) > 1e-3, f"{arch}/{sharing}: {name} was not split"
                g = text_only + sum(image)
            err = rel_err(g, ref)
            assert err <= TOL, f"{arch}/{sharing}: grad of {name} differs, rel err {err:.2e}"
        handle.undo()


def _hook_counts(model):
    return {
        name: (len(m._forward_pre_hooks), len(m._forward_hooks))
        for name, m in model.named_modules()
    }


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_undo_restores_the_original_modules(arch):
    model = build(arch)
    layout = mixed_layout()
    ids = random_ids(layout)
    mask = layout.valid_mask().long()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_counts(model)
    layers = list(adapter_for(model).layers(model))
    ref = run(model, ids, attention_mask=mask).detach()

    for sharing in SHARINGS:
        with apply_reduction(model, {"understanding": "himix"}, sharing) as handle:
            # Patched but called without a layout: the original forward, bit for bit.
            assert torch.equal(run(model, ids, attention_mask=mask), ref)
            out = run(model, ids, layout)
            assert not torch.equal(out[layout.valid_mask()], ref[layout.valid_mask()])
            out.sum().backward()  # image projections get grads; undo must drop them anyway
            assert all("forward" in layer.__dict__ for layer in layers)
            assert _hook_counts(model) != hooks
        assert handle.num_layers == 0

        after = model.state_dict()
        assert list(after) == list(before), f"{sharing}: state_dict keys changed"
        for k, v in before.items():
            assert torch.equal(after[k], v), f"{sharing}: {k} changed"
        assert not [n for n, _ in model.named_modules() if "image_proj" in n]
        assert not [m for m in model.modules() if hasattr(m, "image_proj")]
        assert all("forward" not in layer.__dict__ for layer in layers)
        assert _hook_counts(model) == hooks, f"{sharing}: hooks left behind"
        assert not hasattr(model, "_tokred_handle")
        model.zero_grad(set_to_none=True)
        assert torch.equal(run(model, ids, attention_mask=mask), ref)

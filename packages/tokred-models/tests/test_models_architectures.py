"""Reduced roles on every architecture, checked without an architecture-specific oracle.

The float64 oracle (test_models_oracle.py) is written for Llama. For the others (q/k norm,
swin norm placement, biases, sliding windows, nested decoders) two identities pin INJECT
and BYPASS down using only the unpatched model:
- INJECT at layer 0: the layer-0 hidden states *are* the embeddings, so image keys/values
  computed from the embeddings equal those of ACTIVE image tokens there, and every ACTIVE
  token's layer-0 output is the same under himix as under none (it differs from layer 1 on).
- BYPASS in every layer: image tokens then never take part, so the text logits are those of
  the unpatched model run on the text tokens alone at their original positions. Sliding
  window models are left out of this one: their window counts sequence indices, which
  the shortened sequence changes.
"""

from __future__ import annotations

import pytest
import torch
from tokred_core import Role, TaskPolicies
from tokred_core.policies import HiMix, HMGen
from tokred_models import adapter_for, apply_reduction
from tokred_models.testing import (
    ARCHITECTURES,
    build,
    mixed_layout,
    perturb_image_projections_,
    random_ids,
    rel_err,
    run,
)

WINDOWED = {"qwen2", "mistral"}


def _layer0_outputs(model):
    captured = []
    layer0 = adapter_for(model).layers(model)[0]

    def hook(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    return captured, layer0.register_forward_hook(hook)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("sharing", ["modality", "task"])
def test_inject_at_layer_0_equals_active_image_keys(arch, sharing):
    model = build(arch)
    layout = mixed_layout()
    ids = random_ids(layout)
    handle = apply_reduction(model, None, sharing)
    perturb_image_projections_(model)
    captured, hook = _layer0_outputs(model)
    full = run(model, ids, layout).detach()
    handle.set_policies(TaskPolicies({"understanding": HiMix(start_layer=0)}))
    reduced = run(model, ids, layout).detach()
    roles0 = handle.plan(layout).roles[0]
    hook.remove()
    handle.undo()

    active0, inject0 = roles0 == Role.ACTIVE, roles0 == Role.INJECT
    assert int(inject0.sum()) == 12
    assert rel_err(captured[1], captured[0], active0) <= 1e-5, (
        f"{arch}: INJECT keys differ at layer 0"
    )
    # INJECT hidden states are never updated: still the embeddings after layer 0.
    embeddings = model.get_input_embeddings()(ids).detach()
    assert torch.equal(captured[1][inject0], embeddings[inject0])
    # From layer 1 on the image keys come from the embeddings, not the updated states.
    valid = layout.valid_mask()
    assert rel_err(reduced, full, valid) > 1e-3


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a not in WINDOWED])
def test_bypass_in_every_layer_equals_the_text_only_sequence(arch):
    model = build(arch)
    layout = mixed_layout()
    ids = random_ids(layout)
    text = layout.text_mask()
    n_layers = len(adapter_for(model).layers(model))
    with apply_reduction(model, HMGen(layers=list(range(n_layers))), "modality"):
        perturb_image_projections_(model)  # unused: BYPASS tokens project nothing
        reduced = run(model, ids, layout).detach()
    for b in range(layout.batch_size):
        positions = torch.nonzero(text[b]).flatten()
        # An explicit mask: without one, HF reads gaps in position_ids as packed sequences.
        alone = run(
            model,
            ids[b : b + 1, positions],
            attention_mask=torch.ones(1, len(positions), dtype=torch.long),
            position_ids=positions[None],
        )[0].detach()
        err = rel_err(reduced[b, positions], alone)
        assert err <= 1e-5, f"{arch}: sample {b} text logits differ by {err:.2e}"

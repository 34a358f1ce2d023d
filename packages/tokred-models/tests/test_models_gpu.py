"""On a GPU: the reduced forward and backward equal the CPU's, and a static plan's decoder
runs with no device-to-host synchronisation (torch.cuda.set_sync_debug_mode raises on one).
Skipped without CUDA; `benchmarks/gpu_check.sh` runs these with the GPU benchmark."""

from __future__ import annotations

import pytest
import torch
from tokred_models import apply_reduction
from tokred_models.testing import (
    build_llama,
    grads,
    logit_loss,
    mixed_layout,
    perturb_image_projections_,
    policy_cases,
    random_ids,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

LAYERS = 5
CASES = policy_cases(LAYERS)
STATIC = ["himix", "himix_start1", "hmgen_alternate", "hmgen_layers", "himix_hmgen_task"]


def _step(name: str, device: str, sync_check: bool = False):
    policies, sharing = CASES[name]
    model = build_llama(layers=LAYERS, seed=0)
    handle = apply_reduction(model, policies, sharing)
    perturb_image_projections_(model)
    model.to(device).train()
    layout = mixed_layout()
    ids = random_ids(layout).to(device)
    mask = layout.valid_mask().long()
    prepared = handle.prepare(layout, mask)
    hooks = []
    if sync_check:
        layers = model.model.layers
        hooks.append(
            layers[0].register_forward_pre_hook(
                lambda m, a: torch.cuda.set_sync_debug_mode("error")
            )
        )
        hooks.append(
            layers[-1].register_forward_hook(lambda m, a, o: torch.cuda.set_sync_debug_mode(0))
        )
    try:
        logits = model(
            input_ids=ids, attention_mask=mask.to(device), tokred_layout=prepared, use_cache=False
        ).logits
    finally:
        torch.cuda.set_sync_debug_mode(0)
        for h in hooks:
            h.remove()
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5)).to(device)
    logit_loss(logits, layout.valid_mask().to(device), weights).backward()
    return logits.detach().cpu(), {k: v.cpu() for k, v in grads(model).items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_equals_cpu(name):
    cpu_logits, cpu_grads = _step(name, "cpu")
    gpu_logits, gpu_grads = _step(name, "cuda")
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=2e-3, atol=2e-3)
    for key, g in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[key], g, rtol=5e-3, atol=5e-3, msg=key)


@pytest.mark.parametrize("name", STATIC)
def test_static_plans_do_not_synchronise_on_cuda(name):
    _step(name, "cuda", sync_check=True)

"""Batches mixing both tasks, comparisons, and the policy cases every oracle test walks."""

from __future__ import annotations

import torch
from tokred_core import TaskPolicies, TokenLayout
from tokred_core.policies import Aligned, FastV, HiMix, HMGen, PyramidDrop, RandomDrop
from torch import nn

from .models import TEXT_TOKENS

# A right-padded batch mixing understanding (with an input image) and generation (image
# tokens as the output), of different lengths.
MIXED_SPANS = [
    [("system", 2), ("image", 7), ("instruction", 3), ("output", 3)],
    [("system", 2), ("instruction", 3), ("output", 7)],
    [("system", 1), ("image", 5), ("instruction", 2), ("output", 2)],
    [("system", 1), ("instruction", 2), ("output", 4)],
]
MIXED_TASKS = ["understanding", "generation", "understanding", "generation"]


def mixed_layout(padding_side: str = "right", length: int | None = None) -> TokenLayout:
    return TokenLayout.from_spans(
        MIXED_SPANS, MIXED_TASKS, length=length, padding_side=padding_side
    )


def random_ids(layout: TokenLayout, seed: int = 1) -> torch.Tensor:
    """Token ids (pad id 0 at padding) for a layout."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(*TEXT_TOKENS, layout.segments.shape, generator=g)
    return ids.masked_fill(~layout.valid_mask(), 0)


def run(model: nn.Module, ids: torch.Tensor, layout: TokenLayout | None = None, **kwargs):
    """Logits of a call with the layout's attention mask (and the layout, if given)."""
    mask = kwargs.pop("attention_mask", None)
    if mask is None and layout is not None:
        mask = layout.valid_mask().long()
    extra = {} if layout is None else {"tokred_layout": layout}
    return model(input_ids=ids, attention_mask=mask, use_cache=False, **extra, **kwargs).logits


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """Zero the logits a model pins to the dtype's minimum (Chameleon's image codes)."""
    return logits.masked_fill(logits.abs() > 1e30, 0.0)


def rel_err(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """||a - b|| / ||b|| in float64, optionally over the (B, N) positions of `mask`."""
    a, b = finite_logits(a.detach()).double(), finite_logits(b.detach()).double()
    if mask is not None:
        a, b = a[mask], b[mask]
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def loss_weights(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def logit_loss(logits: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A loss touching every logit of every real position with a fixed random weight."""
    return (finite_logits(logits) * weights * valid[..., None]).sum()


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


# ---- policies ---------------------------------------------------------------------------
def policy_cases(num_layers: int) -> dict[str, tuple[TaskPolicies, str]]:
    """name -> (policies, sharing) covering every policy on a mixed-task batch.

    Understanding-only policies serve the understanding rows; generation rows run
    unreduced except where hmgen serves them.
    """
    shallow_alt = 2 if num_layers >= 5 else 1
    fastv_layer = 2
    cases = {
        "himix": ({"understanding": HiMix(start_layer=0)}, "modality"),
        "himix_start1": ({"understanding": HiMix(start_layer=1)}, "modality"),
        "hmgen_alternate": (HMGen(num_shallow=shallow_alt, pattern="alternate"), "modality"),
        "hmgen_contiguous": (HMGen(num_shallow=2, pattern="contiguous"), "modality"),
        "hmgen_layers": (HMGen(layers=[1, num_layers - 2]), "task"),
        "fastv_last": ({"understanding": FastV(layer=fastv_layer, keep_ratio=0.5)}, "modality"),
        "fastv_prompt": (
            {"understanding": FastV(layer=fastv_layer, keep_ratio=0.4, query="prompt")},
            "shared",
        ),
        "pyramid_drop": ({"understanding": PyramidDrop(keep_ratio=0.5)}, "modality"),
        "random_drop": ({"understanding": RandomDrop(layer=1, keep_ratio=0.5, seed=3)}, "modality"),
        "himix_hmgen_task": (
            {"understanding": HiMix(), "generation": HMGen(num_shallow=shallow_alt)},
            "task",
        ),
        # One band for both tasks, one image set where their plans coincide (outside it).
        "aligned": (Aligned(start_layer=1, end_layer=num_layers - 1), "aligned"),
    }
    return {
        k: (TaskPolicies(p) if isinstance(p, dict) else TaskPolicies.uniform(p), s)
        for k, (p, s) in cases.items()
    }


def capture_states(handle) -> list:
    """Wrap handle.state_for to keep the ExecutionState of every forward (its plan holds
    what was executed: selections and router picks); returns the list it fills."""
    states = []
    original = handle.state_for

    def state_for(layout):
        states.append(original(layout))
        return states[-1]

    handle.state_for = state_for
    return states

"""Image projection sets and the grouped projection that applies them.

Each attention module gets `image_proj.<set>.{q_proj,k_proj,v_proj}`: new trainable
copies of the text projections, one set per entry of `tokred_core.image_sets(sharing)`.
Copies (not fresh weights) so that at initialisation a plan of only ACTIVE tokens gives
exactly the base model's outputs; the `q_proj`/`k_proj`/`v_proj` leaf names let a peft
LoRA config that targets `q_proj` cover the image projections too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "IMAGE_PROJ_ATTR",
    "PROJ_NAMES",
    "add_image_projections",
    "remove_image_projections",
    "grouped_projection",
]

IMAGE_PROJ_ATTR = "image_proj"
PROJ_NAMES = ("q_proj", "k_proj", "v_proj")


def add_image_projections(attn: nn.Module, sets: tuple[str, ...]) -> None:
    if not sets:
        return
    bank = nn.ModuleDict()
    for name in sets:
        group = nn.ModuleDict()
        for proj in PROJ_NAMES:
            clone = copy.deepcopy(getattr(attn, proj))
            for p in clone.parameters():
                if p.is_floating_point():
                    p.requires_grad_(True)
            group[proj] = clone
        bank[name] = group
    setattr(attn, IMAGE_PROJ_ATTR, bank)


def remove_image_projections(attn: nn.Module) -> None:
    if hasattr(attn, IMAGE_PROJ_ATTR):
        delattr(attn, IMAGE_PROJ_ATTR)


def projection_modules(attn: nn.Module, proj: str, sets: tuple[str, ...]) -> list[nn.Module]:
    """[text projection, image set 1, ...] in group-id order (tokred_core.projection_groups)."""
    modules = [getattr(attn, proj)]
    if sets:
        bank = getattr(attn, IMAGE_PROJ_ATTR)
        modules.extend(bank[name][proj] for name in sets)
    return modules


def grouped_projection(
    x: torch.Tensor, groups: torch.Tensor, modules: list[nn.Module]
) -> torch.Tensor:
    """Apply modules[g] to the rows of x (n, d) whose group is g; each row is computed once.

    The common case (one group present) is a plain call, so `none` with `shared` projections
    costs exactly what the base model does.
    """
    if len(modules) == 1:
        return modules[0](x)
    present = torch.unique(groups).tolist() if groups.numel() else [0]
    if len(present) == 1:
        return modules[present[0]](x)
    out = None
    for g in present:
        rows = torch.nonzero(groups == g).squeeze(1)
        y = modules[g](x.index_select(0, rows))
        if out is None:
            out = y.new_zeros(x.shape[0], y.shape[-1])
        out = out.index_copy(0, rows, y.to(out.dtype))
    return out

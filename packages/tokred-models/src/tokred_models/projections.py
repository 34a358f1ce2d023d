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

    Every module runs, on zero rows when no row of x is in its group: all processes of a
    data-parallel or sharded job then run the same modules, and every trainable weight
    gets a gradient (zeros for an absent group), whatever tasks a process's micro-batch
    holds. FSDP2 pairs its reduce-scatters by order and DistributedDataParallel's buckets
    wait for every gradient, so a projection set that one process skipped would pair the
    wrong collectives (silently so when two sets have equal shapes) or need
    find_unused_parameters (a graph traversal every step).

    A group that holds every row is a plain call, so `none` costs what the base model does.
    """
    if len(modules) == 1:
        return modules[0](x)
    n = x.shape[0]
    counts = torch.bincount(groups, minlength=len(modules)).tolist() if n else [0] * len(modules)
    whole = next((g for g, c in enumerate(counts) if c == n), None)
    out = modules[whole](x) if whole is not None else None
    for g, module in enumerate(modules):
        if g == whole:
            continue
        if counts[g]:
            rows = torch.nonzero(groups == g).squeeze(1)
        else:
            rows = groups.new_empty(0)
        y = module(x.index_select(0, rows))
        if out is None:
            out = y.new_zeros(n, y.shape[-1])
        # index_copy keeps a zero-row y in the graph: its weights get zero gradients.
        out = out.index_copy(0, rows, y.to(out.dtype))
    return out

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
    x: torch.Tensor, group_counts: list[int], modules: list[nn.Module]
) -> torch.Tensor:
    """Apply modules[g] to the rows of x (n, d) in group g. The rows come ordered by group
    (schedule.py orders every packed selection so), group g holding group_counts[g] of
    them: each group is a slice, each row is computed once, and no size is read back from
    the device.

    Every module runs, on zero rows when its group is empty: all processes of a
    data-parallel or sharded job then run the same modules, and every trainable weight
    gets a gradient (zeros for an absent group), whatever tasks a process's micro-batch
    holds. FSDP2 pairs its reduce-scatters by order and DistributedDataParallel's buckets
    wait for every gradient, so a projection set that one process skipped would pair the
    wrong collectives (silently so when two sets have equal shapes) or need
    find_unused_parameters (a graph traversal every step).

    With one set (sharing "shared") it is a plain call, so `none` costs what the base
    model does.
    """
    if len(modules) == 1:
        return modules[0](x)
    if len(group_counts) != len(modules) or sum(group_counts) != x.shape[0]:
        raise ValueError(
            f"group_counts {group_counts} do not split {x.shape[0]} rows among {len(modules)} "
            "projection sets"
        )
    outs = []
    start = 0
    for module, count in zip(modules, group_counts, strict=True):
        # A zero-row slice keeps its module in the graph: its weights get zero gradients.
        outs.append(module(x.narrow(0, start, count)))
        start += count
    return torch.cat(outs, dim=0)

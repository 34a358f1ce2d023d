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
    "stacked_projection",
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


def stacked_projection(
    x: torch.Tensor, counts: list[list[int]], modules: list[nn.Module]
) -> torch.Tensor:
    """modules[g] applied to every row of group g of x, whose rows are several sets one
    after another (a layer's ACTIVE rows, then its INJECT rows), set i holding counts[i][g]
    rows of group g in group order (schedule.py orders every packed selection so); the
    result keeps x's row order. Each row is computed once, no size is read back from the
    device, and there is ONE call per module for all the sets: on a small model a call
    costs more than its arithmetic (a matmul forward, two backward, the slicing around
    them).

    Every module runs, on zero rows when its group is empty in every set: all processes of
    a data-parallel or sharded job then run the same modules, and every trainable weight
    gets a gradient (zeros for an absent group), whatever tasks a process's micro-batch
    holds. FSDP2 pairs its reduce-scatters by order and DistributedDataParallel's buckets
    wait for every gradient, so a projection set that one process skipped would pair the
    wrong collectives (silently so when two sets have equal shapes) or need
    find_unused_parameters (a graph traversal every step).

    Slices are taken with `split` (its backward is one concatenation) rather than `narrow`
    (whose backward writes each slice's gradient into a zero tensor of the whole input).
    With one module (sharing "shared") it is a plain call on x, so `none` costs what the
    base model does."""
    for c in counts:
        if len(c) != len(modules):
            raise ValueError(f"group_counts {c} name {len(c)} groups for {len(modules)} sets")
    if sum(map(sum, counts)) != x.shape[0]:
        raise ValueError(
            f"group_counts {counts} do not split {x.shape[0]} rows among {len(modules)} "
            "projection sets"
        )
    if len(modules) == 1:
        return modules[0](x)
    flat = [n for c in counts for n in c]
    pieces = x.split(flat)  # set-major, then group
    ng = len(modules)
    outs: list[torch.Tensor | None] = [None] * len(flat)
    for g, module in enumerate(modules):
        users = [i for i, c in enumerate(counts) if c[g]]
        if not users:
            # A zero-row slice keeps the module in the graph: its weights get zero
            # gradients (its empty result joins the output, so that the loss reaches it).
            outs[g] = module(pieces[g])
            continue
        rows = [pieces[i * ng + g] for i in users]
        out = module(rows[0] if len(rows) == 1 else torch.cat(rows))
        parts = out.split([counts[i][g] for i in users]) if len(rows) > 1 else (out,)
        for i, part in zip(users, parts, strict=True):
            outs[i * ng + g] = part
    present = [o for o in outs if o is not None]
    return present[0] if len(present) == 1 else torch.cat(present)

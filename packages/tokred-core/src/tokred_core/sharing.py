"""Which projection set serves which (modality, task) pair.

shared    image tokens use the text projections (the base model's own q/k/v).
modality  one image Q/K/V set for image tokens of both tasks (the paper's "share all").
task      separate image Q/K/V sets for understanding and for generation (the paper's
          "share partial", which recovered part of the lost synergy, PAPER.md section 4).
aligned   one image set in the layers where the two tasks' plans coincide, separate sets
          per task in the others (alignment.py decides which layers, from the policies).

Group 0 is always the text (base) projections; group k >= 1 is `image_sets(sharing)[k-1]`.
"""

from __future__ import annotations

from enum import StrEnum

import torch

from .errors import TokredError
from .layout import Task, TokenLayout

__all__ = ["Sharing", "parse_sharing", "image_sets", "projection_groups", "TEXT_GROUP"]

TEXT_GROUP = 0


class Sharing(StrEnum):
    SHARED = "shared"
    MODALITY = "modality"
    TASK = "task"
    ALIGNED = "aligned"


def parse_sharing(value: str | Sharing) -> Sharing:
    try:
        return Sharing(value)
    except ValueError:
        raise TokredError(
            f"unknown projection sharing {value!r}: expected one of "
            f"{', '.join(s.value for s in Sharing)}"
        ) from None


def image_sets(sharing: Sharing | str) -> tuple[str, ...]:
    """Names of the extra image projection sets a sharing mode needs: one per projection
    group after the text's. (`aligned` maps both of its groups to one "image" set in the
    layers where the tasks' plans coincide: alignment.layer_projection_sets.)"""
    sharing = parse_sharing(sharing)
    if sharing is Sharing.SHARED:
        return ()
    if sharing is Sharing.MODALITY:
        return ("image",)
    return ("understanding", "generation")


def projection_groups(layout: TokenLayout, sharing: Sharing | str) -> torch.Tensor:
    """(B, N) long: the projection group of every token (0 = text)."""
    sharing = parse_sharing(sharing)
    image = layout.image_mask()
    groups = torch.zeros_like(layout.segments)
    if sharing is Sharing.MODALITY:
        groups[image] = 1
    elif sharing in (Sharing.TASK, Sharing.ALIGNED):
        gen = (layout.tasks == Task.GENERATION)[:, None].expand_as(image)
        groups[image & ~gen] = 1
        groups[image & gen] = 2
    return groups

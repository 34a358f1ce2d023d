"""Where the two tasks' reduction plans coincide, layer by layer, and the image
projection sets the `aligned` sharing mode gives each layer from that.

Under `aligned` the projection groups are `task`'s (1: understanding image tokens, 2:
generation image tokens), but a layer in which both tasks' image tokens have the same role
maps both groups to one shared "image" set, so their gradients meet in one set of weights
there; the other layers give each task its own set, as `task` does everywhere. This is
decided once, when a model is patched, from the policies on a canonical two-task layout:
a layer coincides when every image token of both samples has one and the same role there
and no selection or route of either task can change it (a dynamic policy's layers from its
first decision on never coincide, since its roles are only known in the forward).
"""

from __future__ import annotations

from .layout import Task, TokenLayout
from .policies.composite import TaskPolicies
from .roles import Role
from .sharing import Sharing, image_sets, parse_sharing

__all__ = ["coinciding_layers", "layer_projection_sets", "SHARED_IMAGE_SET"]

SHARED_IMAGE_SET = "image"


def _canonical_layout() -> TokenLayout:
    return TokenLayout.from_spans(
        [
            [("system", 2), ("image", 4), ("instruction", 2), ("output", 2)],
            [("system", 2), ("instruction", 2), ("output", 4)],
        ],
        ["understanding", "generation"],
    )


def coinciding_layers(policies: TaskPolicies, num_layers: int) -> tuple[bool, ...]:
    """Per layer: whether both tasks' image tokens have one and the same role there."""
    layout = _canonical_layout()
    plan = policies.plan(layout, num_layers)
    image = layout.image_mask()
    first_dynamic = min(
        [s.layer + 1 for s in plan.selections] + [r.layer for r in plan.routes],
        default=num_layers,
    )
    out = []
    for layer in range(num_layers):
        roles = [
            plan.roles[layer][int(task)][image[int(task)]].unique().tolist()
            for task in (Task.UNDERSTANDING, Task.GENERATION)
        ]
        same = roles[0] == roles[1] and len(roles[0]) == 1 and roles[0][0] != int(Role.DROPPED)
        out.append(same and layer < first_dynamic)
    return tuple(out)


def layer_projection_sets(
    sharing: Sharing | str, policies: TaskPolicies, num_layers: int
) -> list[tuple[str, ...]]:
    """Per layer, the image projection set of each projection group after the text's."""
    sharing = parse_sharing(sharing)
    sets = image_sets(sharing)
    if sharing is not Sharing.ALIGNED:
        return [sets] * num_layers
    shared = (SHARED_IMAGE_SET,) * len(sets)
    return [shared if same else sets for same in coinciding_layers(policies, num_layers)]

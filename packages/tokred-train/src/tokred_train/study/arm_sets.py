"""Named sets of study arms: `--arms synergy` stands for the arms of issue 10.

`default` is the paper's study (DEFAULT_ARMS, what `tokred study` runs unless told).
`synergy` adds one arm per synergy-aware strategy to it, on share partial (`@task`, the
paper's arm that kept more synergy) but for aligned pathways, which bring their own
policies and sharing, with settings meant for the study benchmark (8 layers, 1100 steps):

    full steps    a tenth of the steps unreduced, with self-distillation at weight 1
    PCGrad        the tasks' conflicting gradient components projected out
    gating        a layer runs full while its tasks' gradients conflict (cosine < 0)
    router        a learned router keeping half of the image tokens, per task
    aligned       both tasks' image tokens reduced in layers 1..L-2, one image set
                  where their plans coincide (the first and last layers)

A name in a set counts once, also when it is named beside its set.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ARM_SETS", "DEFAULT_ARMS", "SYNERGY_ARMS", "expand_arm_sets"]

#: The study's default: the baseline and the paper's two accelerated joint trainings.
DEFAULT_ARMS = ("baseline", "himix+hmgen@modality", "himix+hmgen@task")
SYNERGY_ARMS = (
    *DEFAULT_ARMS,
    "himix+hmgen@task#full_steps=0.1,distill=1",
    "himix+hmgen@task#surgery=pcgrad",
    "himix+hmgen@task#gate_threshold=0.0",
    "router:capacity=0.5+router:capacity=0.5@task",
    "aligned:start_layer=1+aligned:start_layer=1@aligned",
)
ARM_SETS: dict[str, tuple[str, ...]] = {"default": DEFAULT_ARMS, "synergy": SYNERGY_ARMS}


def expand_arm_sets(names: Sequence[str]) -> list[str]:
    """`names` with each set name replaced by its arms; an arm a set brings that is
    already named (by the user or an earlier set) is not repeated."""
    out: list[str] = []
    for name in names:
        stripped = name.strip()
        if stripped in ARM_SETS:
            out += [a for a in ARM_SETS[stripped] if a not in out and a not in names]
        else:
            out.append(name)
    return out

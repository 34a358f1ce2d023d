"""The arms of the synergy study: which runs each one trains, and their configs.

An arm is a set of training runs that share one reduction and sharing mode: its unified run
(both tasks) and its isolated runs (each task alone, on the unified run's samples of that
task: `data.train_tasks`). The baseline arm is the unreduced model. An acceleration names a
policy per task and a sharing mode in the config's own syntax:

    baseline                                   none / none, shared projections
    himix+hmgen@modality                       the paper's "share all"
    himix+hmgen@task                           the paper's "share partial"
    himix:start_layer=1+hmgen:num_shallow=1@task

`UNDERSTANDING+GENERATION@SHARING`, each side a policy as `reduction.<task>` takes it
(`NAME[:key=value,...]`), the sharing one of shared, modality, task. Its isolated runs use
the same policy on their own task (HiMix on understanding alone, HMGen on generation
alone), as in the paper's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokred_core import TASK_NAMES, TokredError, parse_policy, parse_task

__all__ = ["Arm", "DEFAULT_ARMS", "RunSpec", "parse_arm", "parse_arms"]

BASELINE = "baseline"
#: The study's default: the baseline and the paper's two accelerated joint trainings.
DEFAULT_ARMS = (BASELINE, "himix+hmgen@modality", "himix+hmgen@task")
_SHARING = ("shared", "modality", "task")


@dataclass(frozen=True)
class RunSpec:
    """One training run of an arm."""

    arm: str
    train_tasks: tuple[str, ...]

    @property
    def kind(self) -> str:
        """'unified', or 'isolated-<task>'."""
        return "unified" if len(self.train_tasks) == 2 else f"isolated-{self.train_tasks[0]}"


@dataclass(frozen=True)
class Arm:
    name: str
    understanding: str = "none"
    generation: str = "none"
    sharing: str = "shared"

    @property
    def is_baseline(self) -> bool:
        return self.understanding == "none" and self.generation == "none"

    def runs(self, tasks: Sequence[str] = TASK_NAMES) -> list[RunSpec]:
        """The unified run and one isolated run per task of `tasks`."""
        return [RunSpec(self.name, tuple(TASK_NAMES))] + [RunSpec(self.name, (t,)) for t in tasks]

    def run_identity(self, spec: RunSpec) -> tuple[str, ...]:
        """What decides the training of `spec`: two runs with the same identity train the
        same model on the same data, so a study trains it once and shares it.

        An isolated run reads only its own task's policy, and under `task` sharing uses
        only its task's image projections, which start as the same copies of the text
        projections as `modality`'s one set: the two modes train the same. (`shared` does
        not: it has no image projections of its own.)
        """
        if len(spec.train_tasks) == 2:
            return (spec.kind, self.understanding, self.generation, self.sharing)
        task = spec.train_tasks[0]
        sharing = "modality" if self.sharing == "task" else self.sharing
        return (spec.kind, getattr(self, task), sharing)

    def overrides(self, spec: RunSpec) -> list[str]:
        """The `key=value` overrides that make a config train `spec`."""
        return [
            f"reduction.understanding={self.understanding}",
            f"reduction.generation={self.generation}",
            f"reduction.sharing={self.sharing}",
            "data.train_tasks=" + ",".join(spec.train_tasks),
        ]


def parse_arm(text: str) -> Arm:
    """An arm from its name (see the module docstring); a clear error naming what is wrong."""
    name = text.strip()
    if name == BASELINE:
        return Arm(BASELINE)
    body, at, sharing = name.rpartition("@")
    if not at:
        raise TokredError(
            f"arm {name!r}: expected 'baseline' or UNDERSTANDING+GENERATION@SHARING, "
            "e.g. himix+hmgen@task"
        )
    if sharing not in _SHARING:
        raise TokredError(f"arm {name!r}: sharing {sharing!r} must be one of {', '.join(_SHARING)}")
    und, plus, gen = body.partition("+")
    if not plus or not und.strip() or not gen.strip():
        raise TokredError(f"arm {name!r}: name a policy for each task, joined by '+'")
    for task, policy in (("understanding", und), ("generation", gen)):
        built = parse_policy(policy.strip(), what=f"arm {name!r} {task}")
        if parse_task(task) not in built.tasks:
            raise TokredError(f"arm {name!r}: policy {built.name!r} cannot serve {task}")
    return Arm(name, und.strip(), gen.strip(), sharing)


def parse_arms(names: Sequence[str]) -> list[Arm]:
    """The arms named, the baseline first (every arm's synergy is measured against it),
    each once."""
    arms = [parse_arm(n) for n in names]
    seen: set[str] = set()
    for arm in arms:
        if arm.name in seen:
            raise TokredError(f"arm {arm.name!r} is named twice")
        seen.add(arm.name)
    if BASELINE not in seen:
        arms.insert(0, Arm(BASELINE))
    return sorted(arms, key=lambda a: a.name != BASELINE)

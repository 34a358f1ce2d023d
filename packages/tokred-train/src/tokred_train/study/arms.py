"""The arms of the synergy study: which runs each one trains, and their configs.

An arm is a set of training runs that share one reduction and sharing mode: its unified run
(both tasks) and its isolated runs (each task alone, on the unified run's samples of that
task: `data.train_tasks`). The baseline arm is the unreduced model. An acceleration names a
policy per task and a sharing mode in the config's own syntax, and may add strategy
options (issue 10) after `#`:

    baseline                                   none / none, shared projections
    himix+hmgen@modality                       the paper's "share all"
    himix+hmgen@task                           the paper's "share partial"
    himix:start_layer=1+hmgen:num_shallow=1@task
    himix+hmgen@task#full_steps=0.1,distill=1  a tenth of the steps full, distilled
    none+none@shared#surgery=pcgrad            PCGrad on the unreduced model

`UNDERSTANDING+GENERATION@SHARING[#KEY=VALUE,...]`: each side a policy as
`reduction.<task>` takes it (`NAME[:key=value,...]`), the sharing any mode
`reduction.sharing` takes (tokred_core.Sharing), the options fields of the `strategy`
section (study/arm_strategy.py). Its isolated runs use the same policy on their own task
(HiMix on understanding alone, HMGen on generation alone), as in the paper's table, with
the options that act on one task (full steps and distillation: not PCGrad or gating).

`baseline` takes no options: it is the reference every arm's synergy and cost are measured
against, so it stays the plain unreduced run; a strategy without reduction is its own arm
(`none+none@shared#surgery=pcgrad`), and options that need a reduction to act on (full
steps, distillation, gating) are refused on one.

Gating (`gate_threshold`) reads the gradient conflict measured every run.conflict_every
steps: an arm that gates measures every GATE_CONFLICT_EVERY steps when the config measures
nothing (run.conflict_every=0), else at the config's interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tokred_core import TASK_NAMES, Sharing, TokredError, parse_policy, parse_task

from .arm_sets import DEFAULT_ARMS, expand_arm_sets
from .arm_strategy import Strategy, effective_options, needing_reduction, option_overrides
from .arm_strategy import parse_strategy as _parse_strategy

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = [
    "Arm",
    "BASELINE",
    "DEFAULT_ARMS",
    "GATE_CONFLICT_EVERY",
    "RunSpec",
    "arm_folder",
    "parse_arm",
    "parse_arms",
]

BASELINE = "baseline"
#: run.conflict_every of a gating arm's unified run when the config measures nothing: the
#: gate can change every this many steps (2% of the study benchmark's 1100 steps apart).
GATE_CONFLICT_EVERY = 50
#: Characters an arm's run folder keeps as they are: the names of the paper's arms and of
#: policy options (`himix:start_layer=1+hmgen@task`) stay readable and the folders of
#: studies run before strategies existed keep their names; `#`, `,` and anything else
#: (a `/` would nest folders) are %-escaped.
_FOLDER_SAFE = "+@:="


def arm_folder(name: str) -> str:
    """The folder name of an arm's runs under runs/: the name, %-escaped where unsafe
    (one-to-one: `%` itself is escaped)."""
    return quote(name, safe=_FOLDER_SAFE)


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
    strategy: Strategy = ()
    """The strategy options in effect on the unified run, canonical (arm_strategy.py)."""

    @property
    def is_baseline(self) -> bool:
        return self.understanding == "none" and self.generation == "none" and not self.strategy

    def runs(self, tasks: Sequence[str] = TASK_NAMES) -> list[RunSpec]:
        """The unified run and one isolated run per task of `tasks`."""
        return [RunSpec(self.name, tuple(TASK_NAMES))] + [RunSpec(self.name, (t,)) for t in tasks]

    def run_strategy(self, spec: RunSpec) -> Strategy:
        """The options that act on `spec`: an isolated run drops those acting between the
        tasks, and all of them when its own task is unreduced."""
        if len(spec.train_tasks) == 2:
            return self.strategy
        reduced = getattr(self, spec.train_tasks[0]) != "none"
        return effective_options(self.strategy, tasks=1, reduced=reduced)

    def run_identity(self, spec: RunSpec) -> tuple[Any, ...]:
        """What decides the training of `spec`: two runs with the same identity train the
        same model on the same data, so a study trains it once and shares it.

        An isolated run reads only its own task's policy, and under `task` sharing uses
        only its task's image projections, which start as the same copies of the text
        projections as `modality`'s one set: the two modes train the same. (`shared` does
        not: it has no image projections of its own.) Its strategy is the options that act
        on one task (`run_strategy`), so `...@task#surgery=pcgrad` shares its isolated
        runs with `...@task`.
        """
        strategy = self.run_strategy(spec)
        if len(spec.train_tasks) == 2:
            return (spec.kind, self.understanding, self.generation, self.sharing, strategy)
        task = spec.train_tasks[0]
        sharing = "modality" if self.sharing == "task" else self.sharing
        return (spec.kind, getattr(self, task), sharing, strategy)

    def overrides(self, spec: RunSpec, base: TrainConfig | None = None) -> list[str]:
        """The `key=value` overrides that make a config (`base`, when known) train `spec`."""
        strategy = self.run_strategy(spec)
        out = [
            f"reduction.understanding={self.understanding}",
            f"reduction.generation={self.generation}",
            f"reduction.sharing={self.sharing}",
            "data.train_tasks=" + ",".join(spec.train_tasks),
            *option_overrides(strategy),
        ]
        gates = any(key == "gate_threshold" for key, _ in strategy)
        if gates and (base is None or not base.run.conflict_every):
            out.append(f"run.conflict_every={GATE_CONFLICT_EVERY}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """study.json's arm_specs entry (the strategy as a mapping)."""
        return {
            "name": self.name,
            "understanding": self.understanding,
            "generation": self.generation,
            "sharing": self.sharing,
            "strategy": dict(self.strategy),
            "folder": arm_folder(self.name),
        }


def _sharing(name: str, sharing: str) -> str:
    modes = [s.value for s in Sharing]
    if sharing not in modes:
        raise TokredError(f"arm {name!r}: sharing {sharing!r} must be one of {', '.join(modes)}")
    return sharing


def parse_arm(text: str) -> Arm:
    """An arm from its name (see the module docstring); a clear error naming what is wrong."""
    name = text.strip()
    head, hash_, options = name.partition("#")
    if head == BASELINE:
        if hash_:
            raise TokredError(
                f"arm {name!r}: the baseline takes no strategy options (it is the reference "
                "of every arm); name a strategy without reduction as its own arm, e.g. "
                "none+none@shared#surgery=pcgrad"
            )
        return Arm(BASELINE)
    body, at, sharing = head.rpartition("@")
    if not at:
        raise TokredError(
            f"arm {name!r}: expected 'baseline' or UNDERSTANDING+GENERATION@SHARING, "
            "e.g. himix+hmgen@task"
        )
    _sharing(name, sharing)
    und, plus, gen = body.partition("+")
    if not plus or not und.strip() or not gen.strip():
        raise TokredError(f"arm {name!r}: name a policy for each task, joined by '+'")
    for task, policy in (("understanding", und), ("generation", gen)):
        built = parse_policy(policy.strip(), what=f"arm {name!r} {task}")
        if parse_task(task) not in built.tasks:
            raise TokredError(f"arm {name!r}: policy {built.name!r} cannot serve {task}")
    strategy = _parse_strategy(options, name) if hash_ else ()
    if und.strip() == "none" and gen.strip() == "none" and needing_reduction(strategy):
        raise TokredError(
            f"arm {name!r}: {', '.join(needing_reduction(strategy))} acts on a reduction, and "
            "this arm reduces nothing"
        )
    return Arm(name, und.strip(), gen.strip(), sharing, strategy)


def parse_arms(names: Sequence[str]) -> list[Arm]:
    """The arms named (a named set such as `synergy` stands for its arms: arm_sets.py),
    the baseline first (every arm's synergy is measured against it), each once."""
    arms = [parse_arm(n) for n in expand_arm_sets(names)]
    seen: set[str] = set()
    for arm in arms:
        if arm.name in seen:
            raise TokredError(f"arm {arm.name!r} is named twice")
        seen.add(arm.name)
    if BASELINE not in seen:
        arms.insert(0, Arm(BASELINE))
    return sorted(arms, key=lambda a: a.name != BASELINE)

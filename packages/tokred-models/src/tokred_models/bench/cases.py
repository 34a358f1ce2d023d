"""The policies `tokred bench` times, each on the batch of the task it accelerates.

    himix                  understanding batch, himix for understanding
    hmgen                  generation batch, hmgen for generation
    himix+hmgen            mixed batch (half understanding, half generation): the policy
                           before '+' serves understanding, the one after generation
    fastv:keep_ratio=0.25  options after ':' as in tokred_core's policy grammar

A single policy runs on its own task's batch: generation for hmgen, understanding for the
rest (every other policy reduces image inputs, which only understanding has). Plain
`hmgen` on a short stack takes as many shallow layers as fit, up to its default 3: its
default needs 7 layers and the bench presets include 4-layer ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokred_core import Task, TaskPolicies, TokenLayout, TokredError, build_policy, parse_policy
from tokred_core.cost import canonical_spans
from tokred_core.policies import HMGenConfig, Policy

from .shapes import BenchShape

__all__ = ["BenchCase", "DEFAULT_POLICIES", "parse_cases", "case_tasks"]

DEFAULT_POLICIES = "himix,hmgen,himix+hmgen,fastv"
BATCH_KINDS = ("understanding", "generation", "mixed")


@dataclass(frozen=True)
class BenchCase:
    name: str
    """As the user wrote it, e.g. 'himix+hmgen'."""
    batch: str
    """understanding, generation or mixed."""
    policies: TaskPolicies


def _policy(spec: str, num_layers: int) -> Policy:
    spec = spec.strip()
    if spec == "hmgen":
        fit = max(0, min(HMGenConfig.num_shallow, (num_layers - 1) // 2))
        return build_policy("hmgen", num_shallow=fit)
    return parse_policy(spec, what="--policies")


def _natural_task(policy: Policy) -> Task:
    if policy.tasks == frozenset({Task.GENERATION}) or policy.name == "hmgen":
        return Task.GENERATION
    return Task.UNDERSTANDING


def _case(spec: str, num_layers: int) -> BenchCase:
    parts = spec.split("+")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise TokredError(
            f"--policies {spec!r}: expected NAME or UNDERSTANDING+GENERATION, e.g. himix+hmgen"
        )
    try:
        if len(parts) == 1:
            policy = _policy(spec, num_layers)
            task = _natural_task(policy)
            policies = TaskPolicies({task: policy})
            batch = task.name.lower()
        else:
            understanding, generation = (_policy(p, num_layers) for p in parts)
            policies = TaskPolicies(
                {Task.UNDERSTANDING: understanding, Task.GENERATION: generation}
            )
            batch = "mixed"
    except TokredError as exc:
        raise TokredError(f"--policies {spec!r}: {exc}") from None
    return BenchCase(spec.strip(), batch, policies)


def parse_cases(text: str, shape: BenchShape) -> list[BenchCase]:
    """'himix,hmgen,...' -> one case per comma-separated entry, each planned once on a
    sample of the shape, so a policy that does not fit it (a layer out of range, no image
    tokens) is refused here, before any model is built."""
    specs = [s.strip() for s in text.split(",")]
    if not text.strip() or not all(specs):
        raise TokredError(
            f"--policies {text!r}: expected comma-separated policies, e.g. himix,hmgen"
        )
    cases = [_case(spec, shape.num_layers) for spec in specs]
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise TokredError(f"--policies names {case.name!r} twice")
        seen.add(case.name)
        tasks = case_tasks(case.batch, 1)
        spans = [canonical_spans(t, shape.text_tokens, shape.image_tokens) for t in tasks]
        try:
            case.policies.plan(TokenLayout.from_spans(spans, tasks), shape.num_layers)
        except TokredError as exc:
            raise TokredError(f"--policies {case.name!r}: {exc}") from None
    return cases


def case_tasks(batch: str, size: int) -> list[str]:
    """The task of each sample: `size` samples of one task, or (mixed) half of each, the
    first half understanding (at least one of each)."""
    if batch == "mixed":
        half = max(1, size // 2)
        return ["understanding"] * max(1, size - half) + ["generation"] * half
    if batch not in BATCH_KINDS:
        raise TokredError(f"unknown batch {batch!r}: expected one of {', '.join(BATCH_KINDS)}")
    return [batch] * size

"""What `tokred bench` measured, as dataclasses that round-trip through JSON.

`BenchResult.to_dict()` is what bench.json holds and `BenchResult.from_dict` reads it back
(the table and the plot can be redrawn from the file alone). Times are seconds of one
forward + backward; ratios are an arm's against `none` on the same batch.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Spread", "ArmResult", "CaseResult", "ProbeResult", "SweepPoint", "BenchResult"]


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated measurements."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        if len(values) == 1:
            q1 = q3 = values[0]
        else:
            # 'inclusive' keeps the quartiles inside [min, max] for a handful of repeats.
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), q1, q3, min(values), max(values), len(values))


@dataclass(frozen=True)
class ArmResult:
    arm: str
    time: Spread
    """Seconds per forward + backward."""
    time_ratio: Spread
    """This arm over `none`, per interleaved round (so slow drift of a shared machine
    cancels); its median is the ratio reported."""
    arm_flops_ratio: float
    """Training FLOPs of what this arm computes over `none`'s (cost model, exact causal)."""
    efficiency: float | None
    """(1 - time ratio) / (1 - the case's step FLOPs ratio): the share of the step's FLOP
    saving this arm turns into time; None where the plan saves nothing."""
    memory: int | None
    """Bytes of the measure named by `BenchResult.settings['memory']`; None: not measured."""
    memory_ratio: float | None
    tokens_per_s: float
    loss: float


@dataclass(frozen=True)
class CaseResult:
    policy: str
    batch: str
    samples: int
    tokens: int
    text_tokens: int
    image_tokens: int
    flops_ratio: float
    """The plan's training FLOPs over `none`'s (what the policy can save)."""
    none: ArmResult
    arms: list[ArmResult]
    step_flops_ratio: float | None = None
    """The timed step's training FLOPs over `none`'s: the plan's plus the LM head's, which
    every arm computes alike (None in results written before it was measured)."""

    @property
    def seq_len(self) -> int:
        return self.text_tokens + self.image_tokens

    def arm(self, name: str) -> ArmResult:
        return next(a for a in [self.none, *self.arms] if a.arm == name)


@dataclass(frozen=True)
class ProbeResult:
    """A forward (no grad) of the model with the attention-allocation probe on, against
    the plain model's forward, on the mixed batch."""

    batch: str
    plain: Spread
    probe: Spread
    ratio: Spread


@dataclass(frozen=True)
class SweepPoint:
    text_tokens: int
    image_tokens: int
    cases: list[CaseResult]

    @property
    def seq_len(self) -> int:
        return self.text_tokens + self.image_tokens


@dataclass(frozen=True)
class BenchResult:
    machine: dict[str, Any]
    command: list[str]
    shape: dict[str, Any]
    settings: dict[str, Any]
    cases: list[CaseResult]
    probe: ProbeResult | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        probe = data.get("probe")
        return cls(
            machine=dict(data["machine"]),
            command=list(data["command"]),
            shape=dict(data["shape"]),
            settings=dict(data["settings"]),
            cases=[_case(c) for c in data["cases"]],
            probe=None if probe is None else _probe(probe),
            sweep=[
                SweepPoint(p["text_tokens"], p["image_tokens"], [_case(c) for c in p["cases"]])
                for p in data.get("sweep", [])
            ],
            notes=list(data.get("notes", [])),
        )


def _arm(data: dict[str, Any]) -> ArmResult:
    return ArmResult(
        **{**data, "time": Spread(**data["time"]), "time_ratio": Spread(**data["time_ratio"])}
    )


def _case(data: dict[str, Any]) -> CaseResult:
    return CaseResult(
        **{**data, "none": _arm(data["none"]), "arms": [_arm(a) for a in data["arms"]]}
    )


def _probe(data: dict[str, Any]) -> ProbeResult:
    return ProbeResult(
        data["batch"], Spread(**data["plain"]), Spread(**data["probe"]), Spread(**data["ratio"])
    )

"""The statistics of the synergy study: means with Student-t confidence intervals, paired
differences, ratios with Fieller intervals, and the multi-task literature's Δm%.

Why these: a study runs few seeds (3 by default), paired by seed (the same data order and
initial weights in every arm), so intervals must be t-based, differences are taken within
a seed before averaging, and a ratio of two noisy means (synergy kept = accelerated
synergy / baseline synergy) needs Fieller's interval, which says "unbounded" honestly when
the denominator is not clearly away from zero instead of inventing a number.
Pure Python: no scipy (the t quantiles are tabulated below).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "Estimate",
    "delta_m",
    "estimate",
    "paired_difference",
    "ratio_estimate",
    "t_quantile",
]

# Two-sided 95% quantiles of Student's t (0.975 one-sided), by degrees of freedom.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (95% two-sided)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df}: need at least 1")
    if df in _T975:
        return _T975[df]
    known = sorted(_T975)
    if df > known[-1]:
        return 1.960 + (_T975[120] - 1.960) * 120 / df  # t -> normal as 1/df
    hi = next(k for k in known if k > df)
    lo = max(k for k in known if k < df)
    # Linear in 1/df between tabulated points (the usual interpolation).
    w = (1 / df - 1 / hi) / (1 / lo - 1 / hi)
    return _T975[hi] + w * (_T975[lo] - _T975[hi])


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% interval (low/high None: unbounded or one seed)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    values: tuple[float, ...] = ()
    """The per-seed values it summarises."""

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None or self.mean is None:
            return None
        return (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """The interval lies wholly on one side of `value` (e.g. synergy clearly not 0)."""
        return self.low is not None and self.high is not None and not self.low <= value <= self.high

    def to_dict(self) -> dict:
        out = asdict(self)
        out["values"] = list(self.values)
        out["half_width"] = self.half_width
        return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _cov(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = _mean(xs), _mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (len(xs) - 1)


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and t-interval of per-seed values (no interval from one value; empty: None)."""
    xs = tuple(float(v) for v in values)
    if not xs:
        return Estimate(None, None, None, 0)
    if len(xs) == 1:
        return Estimate(xs[0], None, None, 1, xs)
    mean = _mean(xs)
    half = t_quantile(len(xs) - 1) * math.sqrt(_var(xs) / len(xs))
    return Estimate(mean, mean - half, mean + half, len(xs), xs)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Estimate:
    """a - b over the seeds both have, differenced within each seed first."""
    seeds = sorted(set(a) & set(b))
    return estimate([a[s] - b[s] for s in seeds])


def ratio_estimate(num: Mapping[int, float], den: Mapping[int, float]) -> Estimate:
    """mean(num) / mean(den) over the seeds both have, with Fieller's 95% interval for
    paired samples. The interval is unbounded (low = high = None) when the denominator's
    interval contains 0 or the quadratic has no real roots: the ratio is then not known."""
    seeds = sorted(set(num) & set(den))
    a = [num[s] for s in seeds]
    b = [den[s] for s in seeds]
    n = len(seeds)
    if n == 0:
        return Estimate(None, None, None, 0)
    ma, mb = _mean(a), _mean(b)
    ratio = ma / mb if mb != 0 else None
    per_seed = tuple(x / y for x, y in zip(a, b, strict=True) if y != 0)
    if n == 1 or ratio is None:
        return Estimate(ratio, None, None, n, per_seed)
    t2 = t_quantile(n - 1) ** 2
    vaa, vbb, vab = _var(a) / n, _var(b) / n, _cov(a, b) / n
    qa = mb * mb - t2 * vbb
    qb = ma * mb - t2 * vab
    qc = ma * ma - t2 * vaa
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:
        return Estimate(ratio, None, None, n, per_seed)
    root = math.sqrt(disc)
    return Estimate(ratio, (qb - root) / qa, (qb + root) / qa, n, per_seed)


def delta_m(
    scores: Mapping[str, float], isolated: Mapping[str, float], lower_is_better: Mapping[str, bool]
) -> float:
    """Δm%: the mean over tasks of the relative change against isolated training, signed so
    that positive is better (Maninis et al. 2019; the multi-task literature's measure)."""
    changes = []
    for task, value in scores.items():
        base = isolated[task]
        if base == 0:
            raise ValueError(f"{task}: the isolated score is 0, so a relative change is undefined")
        sign = -1.0 if lower_is_better.get(task, False) else 1.0
        changes.append(sign * (value - base) / abs(base))
    return 100.0 * sum(changes) / len(changes)

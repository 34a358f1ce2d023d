"""The study's statistics against hand computations and their own definitions."""

from __future__ import annotations

import math
import random

import pytest
from tokred_train.study.stats import (
    delta_m,
    estimate,
    paired_difference,
    ratio_estimate,
    t_quantile,
)


def test_t_quantiles_match_the_table_and_approach_the_normal():
    assert t_quantile(2) == pytest.approx(4.303)
    assert t_quantile(35) == pytest.approx(2.030, abs=2e-3)  # interpolated (2.0301)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_estimate_is_the_t_interval():
    est = estimate([0.5, 0.6, 0.7])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert est.mean == pytest.approx(0.6)
    assert (est.low, est.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert est.excludes(0.0) and not est.excludes(0.6)
    one = estimate([0.4])
    assert (one.mean, one.low, one.high, one.n) == (0.4, None, None, 1)
    assert estimate([]).mean is None


def test_paired_difference_differs_within_seeds_first():
    a = {0: 0.9, 1: 0.5, 2: 0.7, 9: 1.0}  # seed 9 has no partner: left out
    b = {0: 0.8, 1: 0.4, 2: 0.6}
    est = paired_difference(a, b)
    assert est.n == 3 and est.mean == pytest.approx(0.1)
    assert est.half_width == pytest.approx(0.0, abs=1e-12)  # the same gain on every seed


def test_fieller_interval_endpoints_solve_its_defining_equation():
    rng = random.Random(0)
    num = {s: 0.3 + rng.gauss(0, 0.02) for s in range(5)}
    den = {s: 0.4 + 0.5 * (num[s] - 0.3) + rng.gauss(0, 0.02) for s in range(5)}
    est = ratio_estimate(num, den)
    a, b = list(num.values()), list(den.values())
    n = 5
    ma, mb = sum(a) / n, sum(b) / n

    def var(x, y):  # the covariance of the two means
        mx, my = sum(x) / n, sum(y) / n
        return sum((xi - mx) * (yi - my) for xi, yi in zip(x, y, strict=True)) / (n - 1) / n

    t = t_quantile(n - 1)
    for r in (est.low, est.high):
        lhs = (ma - r * mb) ** 2
        rhs = t * t * (var(a, a) - 2 * r * var(a, b) + r * r * var(b, b))
        assert lhs == pytest.approx(rhs, rel=1e-9)
    assert est.low < ma / mb < est.high
    assert est.mean == pytest.approx(ma / mb)


def test_a_ratio_over_a_denominator_near_zero_is_unbounded():
    est = ratio_estimate({0: 0.1, 1: 0.2, 2: 0.1}, {0: 0.05, 1: -0.04, 2: 0.01})
    assert est.mean is not None and est.low is None and est.high is None


def test_delta_m_signs_lower_is_better():
    got = delta_m(
        {"understanding": 0.6, "generation": 1.8},
        {"understanding": 0.5, "generation": 2.0},
        {"generation": True},
    )
    assert got == pytest.approx(100 * (0.2 + 0.1) / 2)
    with pytest.raises(ValueError, match="isolated score is 0"):
        delta_m({"understanding": 0.1}, {"understanding": 0.0}, {})

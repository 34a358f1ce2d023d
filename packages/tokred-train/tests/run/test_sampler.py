"""The mixed-task sampler: exact mixing ratio, epochs without repeats, determinism, ranks."""

from __future__ import annotations

import numpy as np
import pytest
from tokred_core import TokredError
from tokred_train.run.sampler import MixedBatchSampler


@pytest.mark.parametrize(("ratio", "batch"), [(0.5, 8), (0.3, 16), (1 / 3, 4), (0.0, 5), (1.0, 3)])
def test_ratio_is_exact_over_batches(ratio, batch):
    s = MixedBatchSampler({"understanding": 37, "generation": 11}, ratio, batch, seed=1)
    for m in range(1, 40):
        und = sum(s.counts(i)[0] for i in range(m))
        assert und == int(ratio * m * batch + 1e-9)
        u, g = s.counts(m)
        assert u + g == batch and abs(u - ratio * batch) < 1


def test_epochs_cover_every_sample_once_and_are_deterministic():
    s = MixedBatchSampler({"understanding": 10, "generation": 6}, 0.5, 4, seed=3)
    draws = [s.draw(m) for m in range(5)]  # 10 understanding and 10 generation samples
    und = np.concatenate([d["understanding"] for d in draws])
    assert sorted(und.tolist()) == list(range(10))
    gen = np.concatenate([d["generation"] for d in draws])
    assert sorted(gen[:6].tolist()) == list(range(6))
    again = MixedBatchSampler({"understanding": 10, "generation": 6}, 0.5, 4, seed=3)
    assert all(
        np.array_equal(again.draw(m)[t], draws[m][t])
        for m in (4, 0, 2)
        for t in ("understanding", "generation")
    )
    other = MixedBatchSampler({"understanding": 10, "generation": 6}, 0.5, 4, seed=4)
    assert not np.array_equal(other.draw(0)["understanding"], draws[0]["understanding"])


def test_ranks_split_the_global_batch():
    sizes = {"understanding": 50, "generation": 50}
    whole = MixedBatchSampler(sizes, 0.5, 8, seed=0, world_size=1)
    ranks = [MixedBatchSampler(sizes, 0.5, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    for m in range(3):
        parts = [r.draw(m) for r in ranks]
        assert all(len(p["understanding"]) + len(p["generation"]) == 4 for p in parts)
        for task in ("understanding", "generation"):
            joined = sorted(np.concatenate([p[task] for p in parts]).tolist())
            assert joined == sorted(whole.draw(m)[task].tolist())


def test_missing_task_is_an_error():
    with pytest.raises(TokredError, match="understanding_ratio=0.5 asks for generation"):
        MixedBatchSampler({"understanding": 4, "generation": 0}, 0.5, 4)
    MixedBatchSampler({"understanding": 4, "generation": 0}, 1.0, 4)

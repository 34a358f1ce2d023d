"""Prefetching changes when a batch is built, never which batch: the same losses with and
without it; errors surface at the step that needs the batch."""

from __future__ import annotations

import threading

import pytest
from tokred_train import load_config, train
from tokred_train.run.prefetch import Prefetcher


def test_prefetcher_builds_ahead_in_order_and_after_jumps():
    built, threads = [], set()

    def build(i):
        built.append(i)
        threads.add(threading.current_thread().name)
        return i * i

    with Prefetcher(build, depth=2) as p:
        assert [p.get(i) for i in range(4)] == [0, 1, 4, 9]
        assert p.get(10) == 100  # a jump (a resume) rebuilds the queue
    assert set(range(4)) | {10} <= set(built)
    assert all(name.startswith("tokred-prefetch") for name in threads)
    with Prefetcher(build, depth=0) as p:
        assert p.get(3) == 9


def test_prefetcher_raises_at_the_index_that_failed():
    def build(i):
        if i == 2:
            raise ValueError("bad record 2")
        return i

    with Prefetcher(build, depth=3) as p:
        assert p.get(0) == 0 and p.get(1) == 1
        with pytest.raises(ValueError, match="bad record 2"):
            p.get(2)
    with pytest.raises(ValueError, match="depth -1"):
        Prefetcher(build, depth=-1)


def test_same_losses_with_and_without_prefetching(tmp_path):
    def run(name, depth):
        cfg = load_config(
            {
                "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2},
                "data": {"num_train": 8, "num_val": 2, "image_size": 16, "patch_size": 4},
                "optim": {"batch_size": 3, "grad_accum": 2, "max_steps": 4, "warmup_steps": 1},
                "lora": {"enabled": True, "r": 4, "dropout": 0.1},  # dropout draws torch RNG
                "run": {
                    "out_dir": str(tmp_path / name),
                    "progress": False,
                    "tensorboard": False,
                    "threads": 1,
                    "prefetch": depth,
                    "log_every": 1,
                },
            }
        )
        return [(h["loss"], h["tokens"], h["grad_norm"]) for h in train(cfg).history]

    assert run("sync", 0) == run("ahead", 3)

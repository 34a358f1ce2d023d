"""The shipped study benchmarks are what their recipes say: a lossless VQ codebook on
their data, and (the reason `study-image-rich` exists) the paper's arm priced at no more
than the synergy-aware goal's 0.6x FLOPs on the image-rich one, above it on `study`."""

from __future__ import annotations

import numpy as np
import pytest
from tokred.recipes import shipped_configs
from tokred_train import load_config
from tokred_train.built_run import build_run
from tokred_train.data.images import as_uint8_batch
from tokred_train.data.pipeline import build_shapes_data, shapes_dataset
from tokred_train.study.arms import parse_arm
from tokred_train.study.cost import decoder_shape_of
from tokred_train.study.goal import GOAL
from tokred_train.study.runner import FLOPS_BATCHES
from tokred_train.study.strategy_cost import run_flops

PAPER_ARM = "himix+hmgen@task"


@pytest.mark.parametrize("name", ["study", "study-image-rich"])
def test_the_benchmark_codebook_is_lossless_on_both_splits(name):
    data = load_config(shipped_configs()[name]).data
    vq = build_shapes_data(data).image_tokenizer  # the tokenizer the runs train with
    ds = shapes_dataset(data)
    for split in ("train", "validation"):
        images = as_uint8_batch(ds[split]["image"])
        assert np.array_equal(vq.decode(vq.encode(images)).numpy(), images), split


@pytest.mark.parametrize(("name", "within_goal"), [("study", False), ("study-image-rich", True)])
def test_the_paper_arm_reaches_the_flops_goal_only_on_the_image_rich_benchmark(
    name, within_goal, tmp_path
):
    arm = parse_arm(PAPER_ARM)
    unified = arm.runs()[0]
    config = load_config(
        shipped_configs()[name], [*arm.overrides(unified), f"run.out_dir={tmp_path}"]
    )
    run = build_run(config, "cpu")
    flops = run_flops(
        run.data,
        config,
        run.handle.policies,
        decoder_shape_of(run.built.base),
        FLOPS_BATCHES,
        FLOPS_BATCHES,
    )
    ratio = flops.reduced_flops / flops.unreduced_flops
    assert (ratio <= GOAL["flops"]) == within_goal, ratio

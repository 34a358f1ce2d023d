"""The task split of the shapes set: each task's training images lack the combinations
held out of it, the other task shows them, and validation asks only for them."""

from __future__ import annotations

import pytest
from tokred_core import TokredError
from tokred_train.config import DataConfig, TrainConfig, load_config
from tokred_train.data import build_shapes_dataset
from tokred_train.data.pipeline import build_embedded_data
from tokred_train.data.shapes.dataset import KINDS, POSITIONS
from tokred_train.data.shapes.samples import shapes_samples
from tokred_train.data.shapes.task_split import TaskSplit


@pytest.fixture(scope="module")
def split_set():
    return build_shapes_dataset(num_train=400, num_val=120, seed=3, max_shapes=2, task_split=True)


def _combos(shapes):
    return {(s["kind"], s["position"]) for s in shapes}


def test_each_kind_holds_one_cell_out_of_each_task():
    split = TaskSplit(KINDS, POSITIONS, seed=3)
    for task in ("understanding", "generation"):
        held = split.unseen[task]
        assert sorted(k for k, _ in held) == sorted(KINDS)
    assert not split.unseen["understanding"] & split.unseen["generation"]
    # Another seed draws other cells for at least one kind.
    assert any(TaskSplit(KINDS, POSITIONS, seed=s).unseen != split.unseen for s in range(4, 10))


def test_training_images_never_show_a_task_its_held_combinations(split_set):
    split = TaskSplit(KINDS, POSITIONS, seed=3)
    train = split_set["train"]
    served = {"understanding": 0, "generation": 0}
    for shapes, tasks in zip(train["shapes"], train["tasks"], strict=True):
        assert tasks, "every training image serves a task"
        for task in tasks:
            served[task] += 1
            assert not _combos(shapes) & split.unseen[task]
    assert min(served.values()) > 100
    # The other task does show every held combination.
    shown = {t: set() for t in served}
    for shapes, tasks in zip(train["shapes"], train["tasks"], strict=True):
        for task in tasks:
            shown[task] |= _combos(shapes)
    assert split.unseen["understanding"] <= shown["generation"]
    assert split.unseen["generation"] <= shown["understanding"]


def test_validation_asks_only_for_held_combinations(split_set):
    split = TaskSplit(KINDS, POSITIONS, seed=3)
    val = split_set["validation"]
    asked = 0
    for shapes, tasks, qas in zip(val["shapes"], val["tasks"], val["questions"], strict=True):
        assert tasks
        if "generation" in tasks:
            assert _combos(shapes) & split.unseen["generation"]
        held = [s for s in shapes if split.is_unseen("understanding", s)]
        assert bool(qas) == bool(held) == ("understanding" in tasks)
        for qa in qas:  # each question names a held shape: its cell or its colour+kind
            assert any(
                s["position"].replace("-", " ") in qa["question"]
                or f"{s['color']} {s['kind']}" in qa["question"]
                for s in held
            )
            assert "how many" not in qa["question"]
        asked += len(qas)
    assert asked > 100


def test_samples_follow_the_tasks_of_each_image(split_set):
    train = split_set["train"]
    rows = shapes_samples(train).to_list()
    for row in rows:
        assert row["task"] in train[row["image_index"]]["tasks"]
    only_gen = sum(t == ["generation"] for t in train["tasks"])
    assert sum(r["task"] == "generation" for r in rows) == len(train) - sum(
        t == ["understanding"] for t in train["tasks"]
    )
    assert only_gen > 0


def test_without_a_split_every_image_serves_both_tasks():
    ds = build_shapes_dataset(num_train=50, num_val=10, seed=0, max_shapes=2)
    for name in ds:
        assert all(t == ["understanding", "generation"] for t in ds[name]["tasks"])


def test_the_pipeline_builds_split_data_and_the_config_refuses_it_elsewhere():
    cfg = DataConfig(num_train=120, num_val=40, max_shapes=2, task_split=True, seed=1)
    data = build_embedded_data(cfg)
    assert len(data.train["understanding"]) and len(data.train["generation"])
    # Some validation images test understanding only: fewer prompts than images.
    assert 0 < len(data.val["generation"]) < cfg.num_val
    with pytest.raises(TokredError, match="data.task_split"):
        load_config(
            TrainConfig(), ["data.kind=jsonl", "data.paths=[x.jsonl]", "data.task_split=true"]
        )

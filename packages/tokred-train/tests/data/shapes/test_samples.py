"""Expanding shapes images into samples of both tasks."""

from __future__ import annotations

import datasets
import pytest
from tokred_core import TokredError
from tokred_train.data import build_shapes_dataset, shapes_samples


@pytest.fixture(scope="module")
def train() -> datasets.Dataset:
    return build_shapes_dataset(num_train=6, num_val=0, seed=0)["train"]


def test_both_tasks(train):
    s = shapes_samples(train)
    assert isinstance(s, datasets.Dataset)
    assert s.num_rows == 6 * (1 + 4)  # one generation + four questions per image
    gen = s.filter(lambda r: r["task"] == "generation")
    assert gen["prompt"] == train["caption"] and gen["image_index"] == list(range(6))
    und = s.filter(lambda r: r["task"] == "understanding")
    assert und[0]["question"] == train[0]["questions"][0]["question"]
    assert und[0]["answer"] == train[0]["questions"][0]["answer"]


def test_task_subsets_and_question_limit(train):
    assert set(shapes_samples(train, tasks=["generation"])["task"]) == {"generation"}
    und = shapes_samples(train, tasks=["understanding"], questions_per_image=2)
    assert und.num_rows == 12 and set(und["task"]) == {"understanding"}


def test_errors(train):
    with pytest.raises(TokredError, match="empty"):
        shapes_samples(train, tasks=[])
    with pytest.raises(TokredError, match="unknown task"):
        shapes_samples(train, tasks=["captioning"])
    with pytest.raises(TokredError, match="shapes split"):
        shapes_samples(train.remove_columns("questions"))

"""Expand shapes images into training samples of both tasks.

Why: one shapes image serves both tasks: generation (prompt = its caption, target = its
image) and understanding (one sample per question, target = the one-word answer). A
sample refers to its image by `image_index`, so a trainer encodes every image with the
VQ tokenizer once and looks the codes up per batch:

    codes = vq.encode(split["image"])                     # (num_images, T)
    samples = shapes_samples(split)
    batch = samples[i : i + 8]                            # dict of columns
    collate(batch, vocab, codes[batch["image_index"]])

The rows have the fields `collate` reads: task, prompt (generation), question and
answer (understanding).
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
from tokred_core import TokredError, parse_task
from tokred_core.layout import Task

__all__ = ["sample_features", "served_tasks", "shapes_samples"]


def served_tasks(split: datasets.Dataset) -> list[list[str]]:
    """The tasks each image of a shapes split serves: its `tasks` column (a task split),
    or both for every image of a split built without one."""
    if "tasks" in split.column_names:
        return split["tasks"]
    return [["understanding", "generation"]] * len(split)


def sample_features() -> datasets.Features:
    """Schema of a sample row."""
    return datasets.Features(
        {
            "task": datasets.Value("string"),
            "image_index": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )


def shapes_samples(
    split: datasets.Dataset,
    tasks: Sequence[str] = ("understanding", "generation"),
    questions_per_image: int | None = None,
) -> datasets.Dataset:
    """Samples of `tasks` from a shapes split, image by image (shuffle them to train).

    questions_per_image: keep only the first N questions of each image (None: all).
    An image gives samples only of the tasks its `tasks` column names (a task split).
    Only text columns are read, so no image is decoded.
    """
    wanted = {parse_task(t) for t in tasks}
    if not wanted:
        raise TokredError("tasks is empty: give 'understanding', 'generation' or both")
    if questions_per_image is not None and questions_per_image < 0:
        raise TokredError(f"questions_per_image {questions_per_image}: use None or a count >= 0")
    missing = {"caption", "questions"} - set(split.column_names)
    if missing:
        raise TokredError(f"split lacks columns {sorted(missing)}: is it a shapes split?")
    cols: dict[str, list] = {name: [] for name in sample_features()}

    def add(task: str, index: int, prompt: str = "", question: str = "", answer: str = "") -> None:
        for name, value in zip(cols, (task, index, prompt, question, answer), strict=True):
            cols[name].append(value)

    for index, (caption, qas, tasks) in enumerate(
        zip(split["caption"], split["questions"], served_tasks(split), strict=True)
    ):
        if Task.GENERATION in wanted and "generation" in tasks:
            add("generation", index, prompt=caption)
        if Task.UNDERSTANDING in wanted and "understanding" in tasks:
            for qa in qas[:questions_per_image]:
                add("understanding", index, question=qa["question"], answer=qa["answer"])
    return datasets.Dataset.from_dict(cols, features=sample_features())

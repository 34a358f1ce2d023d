"""Layouts: builders, derived masks, and the errors users hit."""

import pytest
import torch
from tokred_core import Segment, Task, TokenLayout, TokredError, parse_task


def test_from_spans_right_padding_and_masks():
    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("image", 3), ("instruction", 2), ("output", 1)],
            [("system", 1), ("instruction", 2), ("output", 4)],
        ],
        ["understanding", "generation"],
        length=9,
    )
    assert layout.batch_size == 2 and layout.seq_len == 9
    assert layout.segments[0].tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 4]
    assert layout.segments[1].tolist() == [0, 2, 2, 3, 3, 3, 3, 4, 4]
    assert layout.tasks.tolist() == [Task.UNDERSTANDING, Task.GENERATION]
    # Generation's image tokens are its output segment.
    assert layout.image_mask().sum(-1).tolist() == [3, 4]
    assert layout.text_mask().sum(-1).tolist() == [5, 3]
    assert layout.valid_mask().sum(-1).tolist() == [8, 7]
    assert layout.target_mask().sum(-1).tolist() == [1, 4]
    assert layout.last_prompt_index().tolist() == [6, 2]


def test_left_padding_positions_start_at_zero_on_the_first_real_token():
    layout = TokenLayout.from_spans(
        [[("system", 1), ("image", 2), ("output", 1)], [("system", 1), ("output", 1)]],
        ["understanding", "understanding"],
        padding_side="left",
    )
    assert layout.segments[1].tolist() == [Segment.PAD, Segment.PAD, Segment.SYSTEM, Segment.OUTPUT]
    assert layout.position_ids().tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]


def test_select_and_check_length():
    layout = TokenLayout.from_spans(
        [[("output", 2)], [("output", 3)]], ["understanding", "generation"]
    )
    sub = layout.select(layout.task_mask(Task.GENERATION))
    assert sub.batch_size == 1 and sub.tasks.tolist() == [Task.GENERATION]
    layout.check_length(3, 2)
    with pytest.raises(TokredError, match="layout length 3 differs"):
        layout.check_length(4)
    with pytest.raises(TokredError, match="batch size 2 differs"):
        layout.check_length(3, batch_size=5)


@pytest.mark.parametrize(
    ("spans", "tasks", "kwargs", "match"),
    [
        ([[("output", 1)]], ["understanding", "generation"], {}, "1 span lists but 2 tasks"),
        ([[("output", 4)]], ["understanding"], {"length": 3}, "shorter than the longest"),
        ([[("picture", 1)]], ["understanding"], {}, "unknown segment 'picture'"),
        ([[("output", -1)]], ["understanding"], {}, "count -1"),
        ([[("pad", 1)]], ["understanding"], {}, "must not contain padding"),
        ([[("output", 0)]], ["understanding"], {}, "has no tokens"),
        ([[("output", 1)]], ["captioning"], {}, "unknown task 'captioning'"),
        ([[("output", 1)]], ["understanding"], {"padding_side": "middle"}, "padding_side"),
        ([[("image", 2), ("output", 1)]], ["generation"], {}, "generation sample but has an IMAGE"),
    ],
)
def test_from_spans_errors(spans, tasks, kwargs, match):
    with pytest.raises(TokredError, match=match):
        TokenLayout.from_spans(spans, tasks, **kwargs)


def test_direct_construction_is_validated():
    with pytest.raises(TokredError, match="must be \\(batch, seq\\)"):
        TokenLayout(torch.zeros(3, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(TokredError, match="tasks must be"):
        TokenLayout(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TokredError, match="outside 0..4"):
        TokenLayout(torch.full((1, 2), 7), torch.zeros(1, dtype=torch.long))


def test_parse_task_forms():
    assert parse_task("Generation") is Task.GENERATION
    assert parse_task(0) is Task.UNDERSTANDING
    assert parse_task(Task.GENERATION) is Task.GENERATION
    with pytest.raises(TokredError):
        parse_task(2)

"""study.conflict: a run's conflict.jsonl as per-group series by step and layer."""

from __future__ import annotations

import json

import pytest
from tokred_train.run.conflict import CONFLICT_FILE
from tokred_train.study.conflict import SERIES_KEYS, layer_profile, read_conflict


def _row(step, layer, group, adjusted, **values):
    return {
        "step": step,
        "layer": layer,
        "group": group,
        "adjusted_cosine": adjusted,
        "numel": 4,
        **values,
    }


def test_rows_become_series_by_step_and_layer(tmp_path):
    rows = [
        _row(2, 1, "q_proj", -0.2, cosine=0.1),
        _row(2, 0, "q_proj", -0.1),
        _row(2, None, "lm_head", 0.3),
        _row(2, 0, "total", -0.4),
        _row(2, None, "total", -0.5),
        _row(4, 0, "q_proj", -0.3),
        _row(4, 1, "q_proj", None),  # a zero gradient: no cosine
        _row(4, None, "total", -0.7),
    ]
    (tmp_path / CONFLICT_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    conflict = read_conflict(tmp_path)
    assert conflict["steps"] == [2, 4]
    q = conflict["groups"]["q_proj"]
    assert q["layers"] == [0, 1] and q["numel"] == [4, 4]
    assert q["adjusted_cosine"] == [[-0.1, -0.2], [-0.3, None]]
    assert q["cosine"] == [[None, 0.1], [None, None]]
    assert set(SERIES_KEYS) <= set(q)
    total = conflict["groups"]["total"]
    assert total["layers"] == [0, None]
    assert total["adjusted_cosine"] == [[-0.4, -0.5], [None, -0.7]]
    assert conflict["groups"]["lm_head"]["layers"] == [None]

    profile = layer_profile(conflict, "q_proj")
    assert profile["layers"] == [0, 1] and profile["last"] == [-0.3, None]
    assert profile["mean"] == pytest.approx([-0.2, -0.2])
    assert layer_profile(conflict, "o_proj") == {"layers": [], "mean": [], "last": []}
    with pytest.raises(ValueError, match="numel"):
        layer_profile(conflict, "q_proj", "numel")


def test_a_run_without_measurements_reads_empty(tmp_path):
    assert read_conflict(tmp_path) == {"steps": [], "groups": {}}

"""One-line errors for config files that are not what they claim: duplicate keys, bytes
that are not UTF-8, and the data options the error hints name."""

from __future__ import annotations

import pytest
from tokred_core import TokredError
from tokred_train.config import load_config


def test_a_section_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\nrun:\n  seed: 1\noptim:\n  max_steps: 3\n")
    with pytest.raises(
        TokredError, match=r"c.yaml: key 'optim' is given twice \(again on line 5\)"
    ):
        load_config(path)


def test_a_key_given_twice_inside_a_section_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(TokredError, match="key 'lr' is given twice"):
        load_config(path)


def test_a_binary_config_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(TokredError, match=r"c.yaml is not UTF-8 text") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_on_bad_record_is_a_data_option():
    assert load_config(None, ["data.on_bad_record=skip"]).data.on_bad_record == "skip"
    with pytest.raises(TokredError, match="data.on_bad_record: 'maybe'"):
        load_config(None, ["data.on_bad_record=maybe"])

"""Numeric options are checked when the command line is parsed: one line naming the
option, exit 2, nothing written."""

from __future__ import annotations

import pytest
from tokred.cli import main

FLOPS = ["flops", "--config", "tiny", "--policy", "himix"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "RUN", "--temperature", "nan"], "--temperature: 'nan' is not a finite number"),
        (["eval", "RUN", "--temperature", "inf"], "--temperature: 'inf' is not a finite number"),
        (["eval", "RUN", "--temperature", "-1"], "--temperature: -1.0 must be at least 0.0"),
        (["eval", "RUN", "--understanding", "-1"], "--understanding: -1 must be at least 0"),
        (["eval", "RUN", "--batch-size", "0"], "--batch-size: 0 must be at least 1"),
        (["eval", "RUN", "--cfg-weight", "nan"], "--cfg-weight: 'nan' is not a finite number"),
        (["demo", "--threads", "-1"], "--threads: -1 must be at least 0"),
        (["demo", "--eval-understanding", "-1"], "--eval-understanding: -1 must be at least 0"),
        (["demo", "--steps", "0"], "--steps: 0 must be at least 1"),
        (["demo", "--steps", "many"], "--steps: 'many' is not an integer"),
        (
            [*FLOPS, "--text-tokens", "1e11", "--image-tokens", "1"],
            "--text-tokens: '1e11' is not an integer",
        ),
        (
            [*FLOPS, "--text-tokens", "1", "--image-tokens", "100000000000"],
            "--image-tokens: 100000000000 must be in 0..10000000",
        ),
        (["analyze", "--tiny", "--samples", "0"], "--samples: 0 must be at least 1"),
        (["study", "--jobs", "0"], "--jobs: 0 must be at least 1"),
        (["study", "--understanding", "-5"], "--understanding: -5 must be at least 0"),
    ],
)
def test_bad_numbers_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokred: error: ") and message in err[0]
    assert not any(tmp_path.iterdir())  # nothing written

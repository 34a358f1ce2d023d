"""Shared by the bad-input catalogue (test_bad_input_catalogue*.py): a tiny trained run
folder, the files a case writes before it runs, and the check of the CLI's contract for a
refused command (exit 2, one line `tokred: error: ...` naming the bad input, no
traceback, no file written or changed)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RUN = "run"  # where a case finds its copy of the tiny run, under tmp_path


def snapshot(root: Path) -> dict[str, str]:
    """Every file (by SHA-256) and folder under `root`, by relative path (a fixture too:
    `snapshot_of`)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{run}", str(tmp / RUN))


def _write(tmp: Path, files: dict[str, Any]) -> None:
    """str: text, bytes: bytes, None: delete, a callable: old bytes -> new bytes."""
    for rel, content in files.items():
        path = tmp / _fill(rel, tmp)
        if content is None:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            continue
        if callable(content):
            content = content(path.read_bytes())
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(_fill(content, tmp), encoding="utf-8")
        else:
            path.write_bytes(content)


@pytest.fixture
def snapshot_of() -> Callable[[Path], dict[str, str]]:
    return snapshot


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny run trained once (one step, final checkpoint): cases copy it, then damage it."""
    from tokred_train import train
    from tokred_train.testing import tiny_run_config

    out = tmp_path_factory.mktemp("catalogue") / RUN
    train(tiny_run_config(out, optim={"max_steps": 1}, eval={"at_end": False}))
    return out


@pytest.fixture
def prepare(request, tmp_path) -> Callable[[list[str], dict[str, Any]], list[str]]:
    """Lay out a case in tmp_path (the tiny run copied to tmp_path/run when the case names
    it), then return its argv with {tmp} and {run} filled in."""

    def setup(argv: list[str], files: dict[str, Any]) -> list[str]:
        if any("{run}" in a for a in argv) or any(k.startswith(RUN + "/") for k in files):
            shutil.copytree(request.getfixturevalue("tiny_run"), tmp_path / RUN)
        _write(tmp_path, files)
        return [_fill(a, tmp_path) for a in argv]

    return setup


def _assert_refused(code: int, out: str, err: str, warnings: list[str], expected: str) -> None:
    """The contract of a refused command; `warnings`: log records at WARNING or above and
    Python warnings, which a real process prints on stderr too (tokred installs no log
    handler)."""
    lines = [*warnings, *err.splitlines()]
    assert code == 2, (code, lines)
    assert out == "", out
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("tokred: error: "), lines
    assert expected in lines[0], (expected, lines[0])


@pytest.fixture
def contract() -> Callable[[int, str, str, list[str], str], None]:
    """The check of a refused command's exit status, output and one error line."""
    return _assert_refused


@pytest.fixture
def refuses(tmp_path, prepare, capsys, caplog, monkeypatch):
    """Run one catalogue case in-process and check the contract, and that tmp_path (every
    folder the case names) is exactly as it was."""
    from tokred.cli import main

    monkeypatch.chdir(tmp_path)  # default output folders land here, where they are seen

    def check(argv: list[str], files: dict[str, Any], expected: str) -> None:
        argv = prepare(argv, files)
        before = snapshot(tmp_path)
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as python:
            warnings.simplefilter("default")  # Python's own defaults, as a process has
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
                warnings.simplefilter("ignore", quiet)
            code = main(argv)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        warned += [f"{w.category.__name__}: {w.message}" for w in python]
        captured = capsys.readouterr()
        _assert_refused(code, captured.out, captured.err, warned, _fill(expected, tmp_path))
        assert snapshot(tmp_path) == before, "files changed"

    return check

"""The demo's --out folder: a rerun replaces only the files the earlier demo wrote; a
foreign folder is refused (unless --force) before any training, and nothing the demo did
not write is ever removed or overwritten."""

from __future__ import annotations

import json

import pytest
from tokred.cli import main
from tokred.demo_folder import MARKER, claim_folder, record_files
from tokred_core import TokredError

# What a real demo leaves under its own paths (a subset is enough: the guard walks them).
DEMO_FILES = (
    "runs/baseline/config.yaml",
    "runs/baseline/checkpoints/step-3/model.pt",
    "runs/baseline/eval/eval.json",
    "runs/reduced/metrics.jsonl",
    "allocation/baseline/allocation.json",
    "allocation/image_share_per_layer.png",
    "samples_reduced.png",
    "metrics.json",
    "report.md",
)
USER_FILES = ("notes.txt", "runs/notes.txt", "allocation/mine.png", "runs/other/config.yaml")


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _earlier_demo(out, user_files=USER_FILES):
    """A folder as a finished demo leaves it, with the user's files added afterwards."""
    claim_folder(out)
    for rel in DEMO_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"demo {rel}")
    record_files(out, complete=True)
    for rel in user_files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"user {rel}")


def _argv(out, *extra):
    return ["demo", "--out", str(out), "--steps", "1", *extra]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokred: error: "), err
    return err[0]


def test_a_rerun_removes_the_demo_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "d"
    _earlier_demo(out)
    listed = json.loads((out / MARKER).read_text())
    assert listed["complete"] is True and set(listed["files"]) == set(DEMO_FILES)
    claim_folder(out)
    left = _tree(out)
    assert {rel: left[rel] for rel in USER_FILES} == {
        rel: f"user {rel}".encode() for rel in USER_FILES
    }
    assert set(left) == {*USER_FILES, MARKER}  # every demo file went, nothing else
    assert not (out / "runs/baseline").exists() and not (out / "allocation/baseline").exists()
    assert json.loads((out / MARKER).read_text())["files"] == {}


@pytest.mark.parametrize(
    "in_the_way",
    ["runs/baseline/notes.txt", "runs/reduced/checkpoints/step-9/model.pt", "samples_baseline.png"],
)
def test_a_foreign_file_under_the_demo_paths_is_refused_by_name(tmp_path, in_the_way):
    out = tmp_path / "d"
    _earlier_demo(out, (*USER_FILES, in_the_way))
    before = _tree(out)
    with pytest.raises(TokredError, match=in_the_way):
        claim_folder(out)
    assert _tree(out) == before  # refused before anything was removed


def test_a_demo_file_changed_since_is_not_the_demos_any_more(tmp_path):
    out = tmp_path / "d"
    _earlier_demo(out)
    (out / "report.md").write_text("my own notes on the report, much longer than it was")
    before = _tree(out)
    with pytest.raises(TokredError, match="report.md"):
        claim_folder(out)
    assert _tree(out) == before


def test_a_marker_cannot_make_the_demo_remove_other_files(tmp_path):
    out = tmp_path / "d"
    _earlier_demo(out)
    marker = json.loads((out / MARKER).read_text())
    marker["files"]["notes.txt"] = [1, 1]  # listed, but not a path the demo writes
    (out / MARKER).write_text(json.dumps(marker))
    claim_folder(out)
    assert (out / "notes.txt").read_text() == "user notes.txt"


def test_an_unreadable_marker_is_refused(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / MARKER).write_text("{not json")
    with pytest.raises(TokredError, match=MARKER):
        claim_folder(out, force=True)
    assert _tree(out) == {MARKER: b"{not json"}


@pytest.mark.parametrize("make", [False, True], ids=["absent", "empty"])
def test_an_absent_or_empty_folder_is_claimed(tmp_path, make):
    out = tmp_path / "new" / "d"
    if make:
        out.mkdir(parents=True)
    claim_folder(out)
    assert set(_tree(out)) == {MARKER}
    assert json.loads((out / MARKER).read_text())["complete"] is False


def test_force_writes_beside_foreign_files_and_keeps_them(tmp_path):
    out = tmp_path / "d"
    (out / "runs").mkdir(parents=True)
    (out / "data.csv").write_text("a,b\n")
    (out / "runs" / "mine").write_text("x")
    claim_folder(out, force=True)
    assert _tree(out) == {
        "data.csv": b"a,b\n",
        "runs/mine": b"x",
        MARKER: (out / MARKER).read_bytes(),
    }


def test_the_cli_refuses_a_foreign_folder_before_training(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "runs" / "baseline").mkdir(parents=True)
    (out / "thesis.tex").write_text("chapter 1")
    (out / "runs" / "baseline" / "config.yaml").write_text("not a demo's")
    before = _tree(out)
    assert main(_argv(out)) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "--force" in line
    assert _tree(out) == before and not (out / MARKER).exists()


def test_the_cli_with_force_gets_past_the_folder_check(tmp_path, capsys):
    # --force accepts the foreign folder; the next check (a foreign file where the demo
    # would write) still stops it before training, with nothing changed.
    out = tmp_path / "d"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1")
    (out / "report.md").write_text("my report")
    before = _tree(out)
    assert main(_argv(out, "--force")) == 2
    line = _one_error_line(capsys)
    assert "report.md" in line and "not written by an earlier demo" in line
    assert _tree(out) == before


def test_the_cli_refuses_a_file_as_out(tmp_path, capsys):
    out = tmp_path / "d"
    out.write_text("x")
    assert main(_argv(out, "--force")) == 2
    assert str(out) in _one_error_line(capsys) and out.read_text() == "x"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--threads", "-1", "--threads: -1 must be at least 0"),
        ("--eval-understanding", "-1", "--eval-understanding: -1 must be at least 0"),
        ("--eval-generation", "-1", "--eval-generation: -1 must be at least 0"),
        ("--probe-samples", "0", "--probe-samples: 0 must be at least 1"),
        ("--steps", "0", "--steps: 0 must be at least 1"),
    ],
)
def test_bad_demo_numbers_are_one_line_and_exit_2(tmp_path, capsys, option, value, message):
    # 0 means something for --threads (pick from the load) and --eval-* (none).
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), option, value]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()

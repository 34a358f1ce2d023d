"""`tokred train`: a tiny run end to end, and bad configs as one-line errors with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tokred.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=3",
    "data.num_train=8",
    "data.num_val=2",
    "data.image_size=16",
    "data.codebook_size=16",
    "data.questions_per_image=1",
    "optim.batch_size=4",
    "optim.max_steps=2",
    "optim.warmup_steps=1",
    "run.progress=false",
    "run.tensorboard=false",
    "eval.max_samples=2",
]


def _tokred_exe() -> list[str]:
    script = Path(sys.executable).parent / "tokred"
    if script.exists():
        return [str(script)]
    found = shutil.which("tokred")
    return [found] if found else [sys.executable, "-m", "tokred.cli"]


def test_train_tiny_shapes_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "tiny-shapes",
        *TINY,
        f"run.out_dir={out}",
        "reduction.understanding=himix",
        "reduction.generation=hmgen",
        "reduction.generation.options.num_shallow=1",
        "reduction.sharing=task",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"run: {out} (steps 0..2)" in text and "val_loss=" in text and "tokens/s" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sharing"] == "task"
    assert summary["policies"]["understanding"]["policy"] == "himix"
    assert summary["policies"]["generation"]["config"]["num_shallow"] == 1
    # Resume of a finished run: nothing left to do, still exit 0.
    assert main([*argv, "run.resume=true", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_this_run"] == 0


def test_print_config(capsys):
    assert main(["train", "tiny-shapes", "optim.lr=0.5", "--print-config"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def _bad_cases(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [1, 2\n")
    return [
        (["tiny-shapes", "optim.lrr=1e-3"], "optim.lrr: unknown key (known: lr, "),
        (["tiny-shapes", "optim.batch_size=sixteen"], "optim.batch_size: expected an integer"),
        ([str(tmp_path / "absent.yaml")], "config file not found"),
        (
            ["tiny-shapes", "data.understanding_ratio=1.5"],
            "data.understanding_ratio: 1.5 is outside [0, 1]",
        ),
        ([str(broken)], "is not valid YAML"),
        (["tiny-shapes", "optim.lr"], "expected KEY=VALUE"),
        (
            ["tiny-shapes", "reduction.understanding=hmgenn"],
            "reduction.understanding: unknown policy",
        ),
        (["tiny-shapes", "reduction.generation=himix"], "cannot serve generation"),
        (["tiny-shapes", "lora.quantize_4bit=true"], "lora.quantize_4bit"),
        (["tiny-shapes", "model.kind=hf"], "model.path"),
        (["tiny-shapes", "model.kind=hf", f"model.path={tmp_path}"], "config.json not found"),
        (["janus-pro-1b-qlora"], "model.path='/path/to/Janus-Pro-1B'"),
        (
            ["tiny-shapes", "model.num_layers=2", "reduction.generation=hmgen"],
            "hmgen num_shallow=3",
        ),
    ]


def test_bad_configs_in_process(tmp_path, capsys):
    for args, expected in _bad_cases(tmp_path):
        overrides = [f"run.out_dir={tmp_path / 'never'}"]
        assert main(["train", *args, *overrides]) == 2, args
        captured = capsys.readouterr()
        err = captured.err
        assert err.count("\n") == 1 and err.startswith("tokred: error: "), err
        assert expected in err, (expected, err)
        assert "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_bad_configs_in_a_subprocess(tmp_path):
    """The four kinds the CLI contract names, through the installed console script."""
    cases = _bad_cases(tmp_path)[:4]
    procs = [
        subprocess.Popen(
            [*_tokred_exe(), "train", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in cases
    ]
    for proc, (args, expected) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, err)
        assert out == "" and err.count("\n") == 1, err
        assert expected in err and "Traceback" not in err, (expected, err)

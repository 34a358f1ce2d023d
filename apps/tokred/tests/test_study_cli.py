"""`tokred study` from the command line: a tiny study end to end with its figures, and bad
input as one line and exit 2 before anything trains."""

from __future__ import annotations

import json

import pytest
from tokred.cli import main
from tokred_train import save_config
from tokred_train.testing import tiny_run_config


@pytest.fixture
def tiny_recipe(tmp_path):
    return str(
        save_config(
            tiny_run_config(tmp_path / "unused", optim={"max_steps": 2}), tmp_path / "tiny.yaml"
        )
    )


#: A strategy arm (issue 10): its name holds `#` and `,`, which its run folder escapes.
ARM = "himix+hmgen:num_shallow=1@modality#full_steps=0.5,distill=1"


def test_a_tiny_study_writes_its_report_json_and_figures(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "study"
    argv = [
        "study", tiny_recipe, "--seeds", "2", "--out", str(out),
        "--arms", "baseline", ARM,
        "--understanding", "4", "--generation", "2", "--set", "run.conflict_every=1",
    ]  # fmt: skip
    assert main(argv) == 0
    study = json.loads((out / "study.json").read_text())
    assert list(study["arms"]) == ["baseline", ARM]
    folder = "himix+hmgen:num_shallow=1@modality%23full_steps=0.5%2Cdistill=1"
    assert study["arm_specs"][ARM]["folder"] == folder
    assert (out / "runs" / folder / "unified" / "seed-0" / "result.json").is_file()
    unified = [r for r in study["records"] if r["arm"] == ARM and r["kind"] == "unified"]
    # Step 2 of 2 is full and distilled: priced unreduced plus reduced.
    assert [r["flops_detail"]["distill_steps"] for r in unified] == [1, 1]
    report = (out / "report.md").read_text()
    conflict = study["arms"]["baseline"]["conflict"]
    assert conflict["layers"][:3] == [0, 1, 2] and len(conflict["cosine"]) == len(
        conflict["layers"]
    )
    assert conflict["cosine"][0]["n"] == 2  # both seeds' unified runs measured it
    assert study["arms"]["baseline"]["runs"]["isolated-understanding"]  # isolated: no conflict
    assert "## Gradient conflict" in report
    names = (
        "scores.png",
        "synergy_kept_vs_flops.png",
        "synergy_kept_vs_step_time.png",
        "synergy_pareto.png",
    )
    for name in (*names, "gradient_conflict.png"):
        assert (out / "figures" / name).stat().st_size > 0
        assert f"figures/{name}" in report
    assert main(argv) == 0  # complete: nothing retrains
    assert "training" not in capsys.readouterr().err.split("done")[-1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0"], "--seeds 0"),
        (["--arms", "warp+hmgen@task"], "warp"),
        (["--arms", "himix+hmgen@everything"], "sharing 'everything'"),
        (["--set", "data.understanding_ratio=1"], "understanding_ratio=1.0"),
        (["--set", "optim.nope=1"], "optim.nope"),
    ],
)
def test_bad_study_input_is_one_line_and_exit_2(tiny_recipe, tmp_path, capsys, extra, message):
    out = tmp_path / "study"
    assert main(["study", tiny_recipe, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[-1].startswith("tokred: error: ") and message in err[-1]
    assert not (out / "runs").exists()


def test_ctrl_c_says_to_rerun_the_study_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    recipe = save_config(
        tiny_run_config(
            tmp_path / "unused",
            optim={"max_steps": 100000},
            run={"ckpt_every": 1000, "log_every": 1},
        ),
        tmp_path / "long.yaml",
    )
    out = tmp_path / "study"
    argv = [
        sys.executable, "-m", "tokred.cli", "study", str(recipe), "--seeds", "1",
        "--arms", "baseline", "--jobs", "1", "--out", str(out),
        "--understanding", "2", "--generation", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    study = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/*/*/*.partial/metrics.jsonl")):
        assert study.poll() is None, "the study ended before its first run trained"
        assert time.monotonic() < deadline, "no run trained within 300 s"
        time.sleep(0.5)
    study.send_signal(signal.SIGINT)
    _, err = study.communicate(timeout=120)
    assert study.returncode == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("tokred: study interrupted;") and "rerun the same command" in last
    (partial,) = out.glob("runs/*/*/*.partial")
    assert list((partial / "checkpoints").glob("step-*/COMPLETE"))

"""`tokred demo` end to end with a very small step count (the real default is tuned to be
clearly above chance; that is checked by running it, not here)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tokred.cli import main
from tokred.findings import above_chance, nontrivial_understanding
from tokred.report import render_report

RUN_KEYS = {"policies", "sharing", "train", "final", "understanding", "generation", "allocation"}


@pytest.mark.slow
def test_demo_writes_report_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--steps",
        "3",
        "--threads",
        "1",
        "--eval-understanding",
        "8",
        "--eval-generation",
        "4",
        "--probe-samples",
        "4",
        "--set",
        "data.num_train=60",
        "--set",
        "data.num_val=8",
    ]
    assert main(argv) == 0
    assert "FLOPs ratio" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert {
        "wall_time_s",
        "machine",
        "setup",
        "runs",
        "comparison",
        "above_chance",
        "files",
    } <= set(m)
    assert set(m["runs"]) == {"baseline", "reduced"}
    for run in m["runs"].values():
        assert RUN_KEYS <= set(run)
        assert run["train"]["steps"] == 3
        assert 0 <= run["understanding"]["accuracy"] <= 1
        assert set(run["generation"]["per_attribute"]) == {"kind", "color", "position", "all"}
        assert run["allocation"]["understanding"]["image_share_first"] >= 0
    assert m["runs"]["reduced"]["generation"]["mode"] == "reduced"
    flops = m["comparison"]["flops"]
    for key in ("mixed", "understanding", "generation"):
        assert 0 < flops[key]["ratio"] < 1  # himix + hmgen remove work
    assert m["comparison"]["step_time_ratio"] > 0
    assert m["setup"]["same_vocab_and_vq"] is True
    for rel in m["files"].values():
        assert (out / rel).is_file(), rel
    for rel in (v for v in m["files"].values() if v.endswith(".png")):
        with Image.open(out / rel) as im:
            im.load()
    report = (out / "report.md").read_text()
    for heading in ("## Setup", "## Results", "## Cost", "## Attention allocation"):
        assert heading in report
    assert report == render_report(m)  # the page re-renders from metrics.json alone
    # The marker lists every file the demo wrote; running it again into the same folder
    # replaces exactly those and keeps the user's files, in --out and in its run folders.
    listed = json.loads((out / ".tokred-demo").read_text())
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert listed["complete"] is True and set(listed["files"]) == written - {".tokred-demo"}
    (out / "notes.txt").write_text("mine")
    (out / "runs" / "notes.txt").write_text("mine too")
    assert main(argv) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "runs" / "notes.txt").read_text() == "mine too"


def test_demo_evaluates_on_held_out_multi_shape_scenes(tmp_path):
    # The demo's task must be able to separate runs: several shapes per image, and
    # validation scenes that training never shows (the split the evaluation rebuilds).
    from tokred.demo_run import demo_config
    from tokred_train.data.shapes.dataset import build_shapes_dataset, scene_key

    d = demo_config(tmp_path, "baseline", 1, False, []).data
    assert d.max_shapes >= 2
    dd = build_shapes_dataset(d.num_train, d.num_val, d.seed, d.image_size, d.max_shapes)
    train = {scene_key(s) for s in dd["train"]["shapes"]}
    val = {scene_key(s) for s in dd["validation"]["shapes"]}
    assert val and not train & val
    counts = {
        q["answer"] for qs in dd["validation"]["questions"] for q in qs if "many" in q["question"]
    }
    assert len(counts) >= 2  # the count question is not trivial


def test_the_demo_recipe_states_only_what_the_demo_changes(tmp_path):
    from tokred.demo_run import DEMO_REDUCTION, demo_config
    from tokred.recipes import DEMO_RECIPE, demo_recipe, demo_steps, shipped_configs
    from tokred_train import load_config
    from tokred_train.config import ModelConfig

    recipe = demo_recipe()
    assert recipe["model"] == {"kind": "tiny"}  # the tiny model's own dimensions
    assert "reduction" not in recipe  # the baseline; the reduced run adds DEMO_REDUCTION
    recipe["optim"]["max_steps"] = 1  # a fresh copy each time
    assert demo_steps() == load_config(shipped_configs()[DEMO_RECIPE]).optim.max_steps > 1
    baseline = demo_config(tmp_path, "baseline", 5, False, ["optim.lr=0.01"])
    assert baseline.model == ModelConfig() and baseline.optim.lr == 0.01
    assert baseline.optim.max_steps == 5 and baseline.run.out_dir == str(tmp_path / "runs/baseline")
    # The reduced run is the recipe's comment's command line: the same config.
    reduced = demo_config(tmp_path, "reduced", 5, True, [])
    assert reduced == load_config(
        shipped_configs()[DEMO_RECIPE],
        [
            "reduction.understanding=himix",
            "reduction.generation=hmgen:num_shallow=1",
            "reduction.sharing=task",
            "optim.max_steps=5",
            f"run.out_dir={tmp_path / 'runs' / 'reduced'}",
        ],
    )
    assert reduced.reduction.generation.options == DEMO_REDUCTION["generation"]["options"]


def test_above_chance_rule():
    u = {
        "accuracy": 0.8,
        "chance": 0.4,
        "majority": 0.5,
        "per_type": {
            "kind": {
                "accuracy": 0.9,
                "correct": 9,
                "total": 10,
                "num_answers": 3,
                "chance": 1 / 3,
                "majority": 0.4,
            },
            "count": {
                "accuracy": 1.0,
                "correct": 10,
                "total": 10,
                "num_answers": 1,
                "chance": 1.0,
                "majority": 1.0,
            },
        },
    }
    g = {
        "accuracy": 0.05,
        "chance": {"kind": 1 / 3, "color": 0.25, "position": 0.25, "all": 1 / 48},
        "per_attribute": {"kind": 0.5, "color": 0.3, "position": 0.9, "all": 0.05},
    }
    nt = nontrivial_understanding(u)
    assert nt["accuracy"] == 0.9 and nt["total"] == 10
    verdict = above_chance({"baseline": {"understanding": u, "generation": g}})["baseline"]
    assert verdict["understanding"] is True
    assert verdict["generation"] is False  # 5% is not 10 points over 2.1%
    assert verdict["generation_attributes"] == {"kind": True, "color": False, "position": True}

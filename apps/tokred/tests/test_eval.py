"""`tokred eval RUN_DIR`: task metrics of a trained run, under its own reduction."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image
from tokred.cli import main
from tokred.recipes import DEMO_RECIPE, shipped_configs

DEMO = shipped_configs()[DEMO_RECIPE]

SMALL = [
    "data.max_shapes=1",  # the single-shape chance levels below
    "data.num_train=40",
    "data.num_val=6",
    "model.hidden_size=32",
    "model.intermediate_size=64",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tokred_train import load_config, train

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (
        ("baseline", []),
        (
            "reduced",
            [
                "reduction.understanding=himix",
                "reduction.generation.policy=hmgen",
                "reduction.generation.options.num_shallow=1",
                "reduction.sharing=task",
            ],
        ),
    ):
        cfg = load_config(DEMO, [*SMALL, *extra, "optim.max_steps=2", f"run.out_dir={root / name}"])
        train(cfg)
        out[name] = root / name
    return out


def test_eval_writes_metrics_and_grid(runs, capsys):
    run_dir = runs["baseline"]
    assert main(["eval", str(run_dir), "--understanding", "10", "--generation", "5"]) == 0
    text = capsys.readouterr().out
    assert "understanding: exact match" in text and "chance" in text
    result = json.loads((run_dir / "eval" / "eval.json").read_text())
    u, g = result["understanding"], result["generation"]
    assert u["total"] == 10 and 0 <= u["accuracy"] <= 1
    assert set(u["per_type"]) <= {"kind", "colour", "position", "count"}
    for t in u["per_type"].values():
        assert t["chance"] == pytest.approx(1 / t["num_answers"])
    assert u["mode"] == "cached"  # no reduction: the plain forward with a KV cache
    assert g["total"] == 5 and set(g["per_attribute"]) == {"kind", "color", "position", "all"}
    assert g["chance"]["kind"] == pytest.approx(1 / 3)
    with Image.open(run_dir / "eval" / "samples.png") as im:
        im.load()
        assert im.format == "PNG"
    lines = (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 10 and {"question", "answer", "prediction"} <= set(json.loads(lines[0]))


def test_eval_of_a_reduced_run_uses_its_reduction(runs, tmp_path, capsys):
    run_dir = runs["reduced"]
    out = tmp_path / "ev"
    args = [
        "eval",
        str(run_dir),
        "--out",
        str(out),
        "--understanding",
        "4",
        "--generation",
        "3",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["understanding"]["mode"] == "reduced"
    assert result["generation"]["mode"] == "reduced"
    assert (out / "eval.json").is_file() and (out / "samples.png").is_file()
    # Forcing the cached path evaluates the unreduced model instead.
    assert main([*args[:-1], "--mode", "cached", "--temperature", "1.0", "--seed", "3"]) == 0
    cached = json.loads((out / "eval.json").read_text())
    assert cached["understanding"]["mode"] == "cached"
    assert cached["settings"]["temperature"] == 1.0


def test_eval_scores_fid_with_a_local_feature_extractor(runs, tmp_path, capsys):
    from tokred_train.testing import save_tiny_feature_extractor

    weights = save_tiny_feature_extractor(tmp_path / "inception.pt")
    out = tmp_path / "ev"
    argv = ["eval", str(runs["baseline"]), "--out", str(out), "--understanding", "0"]
    assert main([*argv, "--generation", "4", "--fid-weights", str(weights)]) == 0
    assert "generation: FID" in capsys.readouterr().out
    g = json.loads((out / "eval.json").read_text())["generation"]
    assert math.isfinite(g["fid"]) and g["fid"] >= -1e-6
    assert g["fid_images"] == 4 and g["fid_weights"] == str(weights)
    assert g["fid_reference"] == "validation images"
    assert g["total"] == 4 and "accuracy" in g  # the detector still scores the shapes set


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "/no/such/run"], "not a run folder"),
        (["eval", "RUN", "--temperature", "-1"], "--temperature"),
        (["eval", "RUN", "--mode", "cached", "--policy", "himix"], "cached"),
    ],
)
def test_eval_errors_are_one_line(argv, message, runs, capsys):
    argv = [str(runs["baseline"]) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokred: error:") and "\n" not in err and message in err

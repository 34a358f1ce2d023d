"""`tokred analyze`: on --tiny, a saved model folder and a trained run folder."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tokred.analysis import ALLOCATION_FILES
from tokred.cli import main
from tokred.policy_arg import parse_policy_arg
from tokred.recipes import DEMO_RECIPE, shipped_configs
from tokred_core import Task, TokredError
from tokred_train import load_config

DEMO = shipped_configs()[DEMO_RECIPE]

SMALL = ["data.num_train=40", "model.hidden_size=32", "model.intermediate_size=64"]


def check_outputs(out, layers: int, samples: int) -> dict:
    for name in ALLOCATION_FILES.values():
        assert (out / name).is_file(), name
    alloc = json.loads((out / ALLOCATION_FILES["json"]).read_text())
    for task in ("understanding", "generation"):
        entry = alloc[task]
        assert entry["num_samples"] == samples
        assert entry["segments"] == ["system", "image", "instruction", "output"]
        assert len(entry["shares"]) == layers
        for row in entry["shares"]:
            assert sum(row) == pytest.approx(1.0, abs=1e-9)
            assert all(v >= 0 for v in row)
        for layer in entry["shares_by_query"]:
            for row in layer:
                assert sum(row) == pytest.approx(1.0, abs=1e-9) or sum(row) == 0
    assert all(row[1] == 0 for row in alloc["generation"]["shares"])  # no input image
    assert alloc["generation"]["image_segment"] == "output"
    for name in ("bars", "pies"):
        with Image.open(out / ALLOCATION_FILES[name]) as im:
            im.load()
            assert im.format == "PNG" and im.width > 200
    return alloc


def test_analyze_tiny(tmp_path, capsys):
    out = tmp_path / "analysis"
    sets = [x for s in SMALL for x in ("--set", s)]
    code = main(
        ["analyze", "--tiny", "--out", str(out), "--samples", "5", "--batch-size", "2", *sets]
    )
    assert code == 0
    alloc = check_outputs(out, load_config(DEMO).model.num_layers, 5)
    assert "understanding" in capsys.readouterr().out
    assert alloc["paper"]["understanding"]["first"]["image"] == 32.6


def test_analyze_model_folder(tmp_path):
    """A model saved with save_pretrained, with the embedded vocab.json and vq/ beside it."""
    from tokred_train import build_train_data
    from tokred_train.model.builder import load_base_model

    cfg = load_config(DEMO, SMALL)
    data = build_train_data(cfg)
    model, _ = load_base_model(cfg, data.vocab.vocab_size, "cpu")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    data.vocab.save(folder / "vocab.json")
    data.image_tokenizer.save(folder / "vq")
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--samples", "3"]) == 0
    check_outputs(out, cfg.model.num_layers, 3)


def test_analyze_janus_model_folder(tmp_path):
    """A real family's folder (a tiny Janus stand-in with its tokenizer): the probe runs
    Janus's own input path on the embedded shapes data."""
    from tokred_train.testing import save_tiny_janus, shapes_texts

    folder = save_tiny_janus(tmp_path / "janus", shapes_texts(2, 3), layers=3)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--samples", "3"]) == 0
    check_outputs(out, 3, 3)


def test_analyze_run_folder_with_and_without_its_reduction(tmp_path):
    from tokred_train import train

    cfg = load_config(
        DEMO,
        [
            *SMALL,
            "optim.max_steps=2",
            "reduction.understanding=himix",
            f"run.out_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg)
    assert main(["analyze", str(tmp_path / "run"), "--samples", "3"]) == 0
    own = json.loads((tmp_path / "run" / "analysis" / "allocation.json").read_text())
    assert "understanding: himix" in own["policy"]
    full = tmp_path / "full"
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "run"),
                "--out",
                str(full),
                "--samples",
                "3",
                "--policy",
                "none",
            ]
        )
        == 0
    )
    alloc = check_outputs(full, cfg.model.num_layers, 3)
    # Under HiMix image tokens are not queries: their query row is empty.
    assert all(sum(layer[1]) == 0 for layer in own["understanding"]["shares_by_query"])
    assert any(sum(layer[1]) > 0 for layer in alloc["understanding"]["shares_by_query"])


def test_policy_argument():
    assert parse_policy_arg("run") is None
    tp = parse_policy_arg("understanding=himix,generation=hmgen:num_shallow=1")
    assert tp.policies[Task.UNDERSTANDING].name == "himix"
    assert tp.policies[Task.GENERATION].config.num_shallow == 1
    assert parse_policy_arg("himix").policies[Task.GENERATION].name == "none"
    with pytest.raises(TokredError):
        parse_policy_arg("understanding=")
    with pytest.raises(TokredError):
        parse_policy_arg("hmgen:oops")
    # The grammar is tokred_core's (parse_task_policies); 'run' and nothing keep the model's.
    assert parse_policy_arg(None) is None and parse_policy_arg("  run ") is None
    assert parse_policy_arg("none").policies[Task.UNDERSTANDING].name == "none"
    with pytest.raises(TokredError, match="^--policy option 'oops' must be key=value"):
        parse_policy_arg("understanding=himix:oops")
    with pytest.raises(TokredError, match="^--policy 'hmgen': expected TASK=NAME"):
        parse_policy_arg("understanding=himix,hmgen")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze"], "--tiny"),
        (["analyze", "/no/such/folder"], "not a folder"),
        (["analyze", "--tiny", "somewhere"], "not both"),
        (["analyze", "--tiny", "--policy", "nosuch"], "nosuch"),
        (["analyze", "--tiny", "--samples", "0"], "--samples"),
    ],
)
def test_analyze_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)] if "--tiny" in argv else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokred: error:") and "\n" not in err and message in err

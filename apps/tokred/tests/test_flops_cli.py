"""`tokred flops`: in-process through main(), and as the installed console script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tokred.cli import main

HIMIX = [
    "flops",
    "--config",
    "vila-u-7b",
    "--policy",
    "himix",
    "--text-tokens",
    "80",
    "--image-tokens",
    "256",
]
KEYS = {
    "baseline_flops",
    "policy_flops",
    "ratio",
    "paper_convention_ratio",
    "per_layer",
    "config",
    "policy",
    "policy_config",
    "task",
    "text_tokens",
    "image_tokens",
    "causal",
    "training_flops_factor",
    "notes",
}


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)


def test_himix_json(capsys):
    out = run_json(capsys, HIMIX)
    assert KEYS <= set(out)
    assert out["paper_convention_ratio"] == pytest.approx(80 / (80 + 256), rel=1e-12)
    assert out["paper_convention_ratio"] < out["ratio"] < 1
    assert out["task"] == "understanding" and out["causal"] == "exact"
    assert out["policy"] == "himix" and out["policy_config"] == {"start_layer": 0}
    assert out["config"]["hidden_size"] == 4096 and out["config"]["num_layers"] == 32
    assert len(out["per_layer"]) == 32
    assert sum(row["flops"] for row in out["per_layer"]) == out["policy_flops"]
    assert sum(row["baseline_flops"] for row in out["per_layer"]) == out["baseline_flops"]
    assert out["ratio"] == pytest.approx(out["policy_flops"] / out["baseline_flops"])
    assert out["training_flops_factor"] == 3
    assert any("causal" in note for note in out["notes"])


@pytest.mark.parametrize(
    "extra",
    [
        ["--policy", "none"],
        ["--policy", "hmgen", "--set", "num_shallow=0"],
        ["--policy", "hmgen", "--set", "layers="],
    ],
)
def test_ratio_one(capsys, extra):
    argv = [
        "flops",
        "--config",
        "llama-3.2-3b",
        *extra,
        "--text-tokens",
        "64",
        "--image-tokens",
        "100",
    ]
    out = run_json(capsys, argv)
    assert out["ratio"] == 1.0 and out["paper_convention_ratio"] == 1.0
    assert out["baseline_flops"] == out["policy_flops"] > 0


def test_natural_task_and_overrides(capsys):
    argv = ["flops", "--config", "llama-3.2-3b", "--policy", "hmgen", "--set", "num_shallow=5"]
    out = run_json(capsys, [*argv, "--text-tokens", "80", "--image-tokens", "256"])
    assert out["task"] == "generation" and out["policy_config"]["num_shallow"] == 5
    shallow = [row["layer"] for row in out["per_layer"] if row["ratio"] < 1]
    assert shallow == [9, 11, 13, 15, 17]
    none = run_json(
        capsys,
        [
            "flops",
            "--config",
            "tiny",
            "--policy",
            "none",
            "--text-tokens",
            "4",
            "--image-tokens",
            "4",
        ],
    )
    assert none["task"] == "understanding"


def test_inline_policy_options_read_as_set_does(capsys):
    base = ["flops", "--config", "vila-u-7b", "--text-tokens", "20", "--image-tokens", "256"]
    inline = run_json(capsys, [*base, "--policy", "router:capacity=0.5", "--task", "generation"])
    given = run_json(
        capsys, [*base, "--policy", "router", "--set", "capacity=0.5", "--task", "generation"]
    )
    assert inline["ratio"] == given["ratio"] < 0.7
    assert inline["policy_config"]["capacity"] == 0.5


def test_dense_counts_more_pairs_than_exact(capsys):
    argv = [
        "flops",
        "--config",
        "tiny",
        "--policy",
        "fastv",
        "--text-tokens",
        "12",
        "--image-tokens",
        "20",
    ]
    exact = run_json(capsys, argv)
    dense = run_json(capsys, [*argv, "--causal", "dense"])
    assert dense["causal"] == "dense"
    assert dense["baseline_flops"] > exact["baseline_flops"]
    assert dense["per_layer"][0]["attention_pairs"] == 32 * 32


def test_hf_config_file(tmp_path, capsys):
    cfg = {
        "language_config": {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    out = run_json(
        capsys,
        [
            "flops",
            "--config",
            str(path),
            "--policy",
            "himix",
            "--text-tokens",
            "10",
            "--image-tokens",
            "30",
        ],
    )
    assert out["config"]["num_layers"] == 24 and len(out["per_layer"]) == 24
    assert out["paper_convention_ratio"] == pytest.approx(10 / 40)


def test_table_output(capsys):
    assert main(HIMIX) == 0
    text = capsys.readouterr().out
    assert "ratio (full count)" in text and "ratio (paper convention):  0.2381" in text
    assert "T/(T+M) = 0.2381" in text
    assert "training FLOPs" in text and "not counted" in text
    assert "system 20 | image 256 | instruction 20 | output 40" in text


def _bad_cases(tmp_path):
    malformed = tmp_path / "broken.json"
    malformed.write_text('{"hidden_size": 4096,')
    missing = tmp_path / "absent" / "config.json"
    base = ["flops", "--config", "vila-u-7b"]
    tokens = ["--text-tokens", "80", "--image-tokens", "256"]
    return [
        ([*base, "--policy", "himixx", *tokens], "unknown policy 'himixx'"),
        ([*base, "--policy", "router:capacity=0", *tokens], "router capacity=0 must be in"),
        (
            [*base, "--policy", "router:capacity=0.5", "--set", "capacity=0.2", *tokens],
            "--policy and --set both give capacity",
        ),
        (
            [*base, "--policy", "hmgen", "--set", "layers=40", *tokens],
            "hmgen layer=40 is out of range",
        ),
        (
            [*base, "--policy", "himix", "--set", "start_layer=32", *tokens],
            "start_layer=32 is out of range",
        ),
        (
            [*base, "--policy", "himix", "--text-tokens", "-5", "--image-tokens", "256"],
            "--text-tokens: -5 must be in 0..10000000",
        ),
        (
            [*base, "--policy", "himix", "--text-tokens", "80", "--image-tokens", "0"],
            "--image-tokens=0",
        ),
        (
            [*base, "--policy", "himix", "--text-tokens", "eighty", "--image-tokens", "1"],
            "'eighty'",
        ),
        (["flops", "--config", str(malformed), "--policy", "himix", *tokens], "is not valid JSON"),
        (["flops", "--config", str(missing), "--policy", "himix", *tokens], str(missing)),
        (
            ["flops", "--config", "vila-7b", "--policy", "himix", *tokens],
            "'vila-7b' is neither a preset",
        ),
        (
            [*base, "--policy", "himix", "--set", "keep_ratio=0.5", *tokens],
            "unknown key 'keep_ratio'",
        ),
        (
            [*base, "--policy", "fastv", "--set", "keep_ratio", *tokens],
            "--set 'keep_ratio' must be KEY=VALUE",
        ),
        ([*base, "--policy", "hmgen", "--set", "num_shallow=many", *tokens], "num_shallow='many'"),
        (
            [*base, "--policy", "himix", "--task", "generation", *tokens],
            "does not support generation",
        ),
        ([*base, "--policy", "himix", *tokens, "--causal", "fuzzy"], "invalid choice: 'fuzzy'"),
        ([*base, "--policy", "himix"], "required: --text-tokens, --image-tokens"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "no command given"),
    ]


def test_bad_input_in_process(tmp_path, capsys):
    for argv, expected in _bad_cases(tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err
        assert captured.out == "", argv
        assert err.count("\n") == 1 and err.startswith("tokred: error: "), err
        assert expected in err, (expected, err)
        assert "Traceback" not in err


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "flops" in capsys.readouterr().out
    assert main(["flops", "--help"]) == 0
    assert "--text-tokens" in capsys.readouterr().out


def _tokred_exe() -> list[str]:
    script = Path(sys.executable).parent / "tokred"
    if script.exists():
        return [str(script)]
    found = shutil.which("tokred")
    return [found] if found else [sys.executable, "-m", "tokred.cli"]


def test_console_script_json_and_errors():
    ok = subprocess.run([*_tokred_exe(), *HIMIX, "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert KEYS <= set(out)
    assert out["paper_convention_ratio"] == pytest.approx(80 / 336, rel=1e-12)
    bad = subprocess.run(
        [
            *_tokred_exe(),
            "flops",
            "--config",
            "vila-u-7b",
            "--policy",
            "hmgen",
            "--set",
            "layers=40",
            "--text-tokens",
            "80",
            "--image-tokens",
            "256",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("tokred: error: hmgen layer=40")
    assert "Traceback" not in bad.stderr

"""`tokred bench` on a tiny shape: the table, the files it writes (whole, or not at all) and
its one-line refusals. No speed is asserted: the timings are the command's output."""

from __future__ import annotations

import json

import pytest
import torch
from tokred.cli import main
from tokred_models.bench import BENCH_PRESETS, DEFAULT_POLICIES, BenchResult

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "text_tokens": 8,
    "image_tokens": 6,
    "batch": 2,
}
SHAPE = {"tiny.json": json.dumps(TINY)}
QUICK = ["--repeats", "1", "--warmup", "0", "--threads", "1"]


@pytest.fixture
def tiny_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    return tmp_path / "tiny.json"


def test_bench_writes_its_files_and_prints_the_table(tiny_shape, tmp_path, capsys):
    argv = ["bench", "--shape", str(tiny_shape), *QUICK, "--policies", "himix,himix+hmgen"]
    assert main([*argv, "--seq-lens", "20", "--out", "out"]) == 0
    out = capsys.readouterr().out
    for word in ("| understanding x2 | himix | none |", "renumbered-gather", "probe", "wrote"):
        assert word in out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["bench.json", "bench.png"]  # no temporary file left behind
    data = json.loads((tmp_path / "out" / "bench.json").read_text(encoding="utf-8"))
    result = BenchResult.from_dict(data)
    assert [c.policy for c in result.cases] == ["himix", "himix+hmgen"]
    assert [p.seq_len for p in result.sweep] == [20]
    assert result.command[:4] == ["tokred", "bench", "--shape", str(tiny_shape)]
    assert (tmp_path / "out" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_goes_to_stdout_and_the_default_folder(tiny_shape, tmp_path, capsys):
    argv = ["bench", "--shape", str(tiny_shape), *QUICK, "--policies", "fastv", "--json"]
    assert main([*argv, "--seq-lens", "", "--batch", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cases"][0]["samples"] == 3 and data["sweep"] == []
    assert (tmp_path / "tokred-bench" / "bench.json").is_file()


def test_a_failure_before_writing_leaves_no_file(tiny_shape, tmp_path, monkeypatch, capsys):
    import tokred.bench_run as bench_run

    def broken(result):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(bench_run, "plot_efficiency", broken)
    argv = ["bench", "--shape", str(tiny_shape), *QUICK, "--policies", "himix", "--seq-lens", ""]
    with pytest.raises(RuntimeError, match="the plot failed"):
        main([*argv, "--out", "out"])
    assert not (tmp_path / "out").exists()


def test_the_help_names_the_library_s_presets_and_default_policies(capsys):
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"({', '.join(BENCH_PRESETS)})" in text
    assert f"(default: {DEFAULT_POLICIES})" in text


P = pytest.param
BENCH = ["bench", "--shape", "{tmp}/tiny.json", *QUICK]
CASES = [
    P(["bench", "--shape", "giant"], {}, "'giant' is neither a preset", id="unknown-preset"),
    P([*BENCH, "--policies", "warp"], SHAPE, "'warp'", id="unknown-policy"),
    P([*BENCH, "--policies", "hmgen+himix"], SHAPE, "cannot serve generation", id="policy-wrong-task"),
    P([*BENCH, "--policies", "fastv:layer=9"], SHAPE, "fastv:layer=9", id="policy-layer-out-of-range"),
    P([*BENCH, "--policies", "himix,"], SHAPE, "'himix,'", id="policies-empty-entry"),
    P([*BENCH, "--batch", "0"], SHAPE, "--batch: 0", id="zero-batch"),
    P([*BENCH, "--batch", "two"], SHAPE, "--batch: 'two'", id="batch-not-a-number"),
    P([*BENCH, "--repeats", "0"], SHAPE, "--repeats: 0", id="zero-repeats"),
    P([*BENCH, "--warmup", "-1"], SHAPE, "--warmup: -1", id="negative-warmup"),
    P([*BENCH, "--device", "tpu"], SHAPE, "'tpu'", id="unknown-device"),
    P([*BENCH, "--seq-lens", "20,x"], SHAPE, "'x' is not an integer", id="seq-lens-not-numbers"),
    P([*BENCH, "--seq-lens", "8"], SHAPE, "--seq-lens 8: must exceed the shape's 8 text tokens", id="seq-lens-too-short"),
    P([*BENCH, "--seq-lens", "1000000"], SHAPE, "--seq-lens 1000000", id="seq-lens-too-long"),
    P([*BENCH, "--out", "{tmp}/f/out"], {**SHAPE, "f": "a file"}, "--out: '{tmp}/f/out'", id="out-under-a-file"),
    P(["bench", "--shape", "{tmp}/c.json"], {"c.json": "{bad"}, "is not valid JSON", id="shape-json-broken"),
    P(["bench", "--shape", "{tmp}/c.json"], {"c.json": json.dumps({**TINY, "text_tokens": "many"})}, "text_tokens='many'", id="shape-json-bad-value"),
    P(["bench", "--shape", "{tmp}/c.json"], {"c.json": '{"hidden_size": 4}'}, "'num_hidden_layers'", id="shape-json-incomplete"),
]  # fmt: skip


@pytest.mark.parametrize("argv, files, expected", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(refuses, argv, files, expected):
    refuses(argv, files, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line(refuses):
    refuses(["bench", "--device", "cuda"], {}, "--device cuda: CUDA is not available")

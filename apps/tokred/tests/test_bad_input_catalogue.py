"""The bad-input catalogue, part 1: `train` configs and run folders, the data formats,
`flops`, `demo` and `study` (part 2, test_bad_input_catalogue_runs.py: `eval` and
`analyze` on damaged run folders).

One table, in the manner of torchtune's config validation tests: each case is (argv,
files written under tmp_path first, the substring the error line must hold: the bad key,
value or path). `refuses` (conftest.py) runs it in-process and checks exit 2, exactly one
stderr line `tokred: error: ...` holding the substring, nothing on stdout, no traceback,
no warning, and tmp_path unchanged (no file written or changed: a refused `train` leaves
no metrics or config in its out_dir). {tmp} is tmp_path, {run} a copy of a tiny trained
run. Every case fails before a model is built, except where a check needs the data (the
sample lengths).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

#: The tiny config of the YAML cases: its data builds in well under a second.
TINY_YAML = """\
model: {hidden_size: 32, intermediate_size: 64, num_layers: 3}
data: {num_train: 12, num_val: 4, image_size: 16, patch_size: 4, codebook_size: 16,
       questions_per_image: 2}
optim: {batch_size: 4, max_steps: 2, warmup_steps: 1}
run: {out_dir: out, progress: false, tensorboard: false, threads: 1}
eval: {max_samples: 4}
"""


def png(seed: int, size: int = 16) -> bytes:
    """A small noisy PNG (distinct patches, so a VQ codebook fits on a few of them)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


OUT = "run.out_dir={tmp}/out"
YAML = {"tiny.yaml": TINY_YAML}
IMAGES = {f"img/{i}.png": png(i) for i in range(4)}
GOOD_JSONL = "".join(
    json.dumps({"prompt": f"a picture {i}", "image": f"img/{i}.png"}) + "\n" for i in range(4)
)
TURNS = [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "noise"}]
GOOD_LLAVA = [{"id": f"u{i}", "image": f"img/{i}.png", "conversations": TURNS} for i in range(4)]


def _t(*args: str) -> list[str]:
    """`tokred train` of the shipped tiny-shapes recipe into {tmp}/out."""
    return ["train", "tiny-shapes", *args, OUT]


def _jsonl(*lines: str | bytes | dict, **more: object) -> dict:
    """gen.jsonl: the four good prompts, then `lines`; with the images and the tiny YAML."""
    tail = [ln if isinstance(ln, (str, bytes)) else json.dumps(ln) for ln in lines]
    body = GOOD_JSONL.encode() + b"".join(
        (t if isinstance(t, bytes) else t.encode()) + b"\n" for t in tail
    )
    return {**YAML, **IMAGES, "gen.jsonl": body, **more}


def _gen(*args: str) -> list[str]:
    """`tokred train` of the tiny YAML on {tmp}/gen.jsonl (generation only)."""
    return ["train", "{tmp}/tiny.yaml", "data.kind=jsonl", "data.paths=[{tmp}/gen.jsonl]",
            "data.understanding_ratio=0", "data.num_val=1", *args, OUT]  # fmt: skip


def _llava(records: list | str) -> dict:
    body = records if isinstance(records, str) else json.dumps(records)
    return {**YAML, **IMAGES, "llava.json": body}


LLAVA = ["train", "{tmp}/tiny.yaml", "data.kind=llava", "data.paths=[{tmp}/llava.json]",
         "data.understanding_ratio=1", "data.num_val=1", OUT]  # fmt: skip
LONG = " ".join(["picture"] * 120)
STUDY = ["study", "{tmp}/tiny.yaml", "--out", "{tmp}/study"]
FLOPS = ["flops", "--config", "tiny", "--policy", "himix"]
TOKENS = ["--text-tokens", "8", "--image-tokens", "8"]

P = pytest.param
CASES = [
    # ---- train: the config tree ---------------------------------------------------------
    P(_t("optim.lrr=1e-3"), {}, "optim.lrr: unknown key", id="train-unknown-key"),
    P(_t("optimizer.lr=1e-3"), {}, "optimizer: unknown key", id="train-unknown-section"),
    P(_t("optim.schedule=linear"), {}, "optim.schedule: 'linear'", id="train-bad-enum"),
    P(_t("model.kind=huge"), {}, "model.kind: 'huge'", id="train-bad-model-kind"),
    P(_t("optim.batch_size=-4"), {}, "optim.batch_size: -4", id="train-negative-count"),
    P(_t("optim.max_steps=0"), {}, "optim.max_steps: 0", id="train-zero-steps"),
    P(_t("run.log_every=0"), {}, "run.log_every: 0", id="train-zero-log-every"),
    P(_t("strategy.full_steps=1.5"), {}, "strategy.full_steps: 1.5", id="train-full-steps"),
    P(_t("strategy.distill=1"), {}, "strategy.distill: 1.0 needs full", id="train-distill-alone"),
    P(
        _t("strategy.gate_threshold=2", "run.conflict_every=5"),
        {},
        "strategy.gate_threshold: 2.0 is outside [-1, 1]",
        id="train-gate-threshold",
    ),
    P(
        _t("strategy.gate_threshold=0"),
        {},
        "strategy.gate_threshold: 0.0 gates by the measured",
        id="train-gate-without-conflict",
    ),
    P(_t("strategy.surgery=mgda"), {}, "strategy.surgery: 'mgda'", id="train-bad-surgery"),
    P(_t("optim.lr=inf"), {}, "optim.lr: 'inf'", id="train-lr-inf"),
    P(_t("optim.lr=nan"), {}, "optim.lr: 'nan'", id="train-lr-nan"),
    P(_t("optim.clip_norm=nan"), {}, "optim.clip_norm: 'nan'", id="train-clip-nan"),
    P(_t("optim.weight_decay=nan"), {}, "optim.weight_decay: 'nan'", id="train-wd-nan"),
    P(_t("optim.eps=nan"), {}, "optim.eps: 'nan'", id="train-eps-nan"),
    P(_t("optim.lr=fast"), {}, "optim.lr: expected a number, got 'fast'", id="train-string-for-number"),
    P(_t("optim.betas=[0.9]"), {}, "optim.betas: [0.9]", id="train-betas-one"),
    P(_t("optim=3"), {}, "optim: expected a section", id="train-section-is-a-value"),
    P(_t("optim.lr"), {}, "override 'optim.lr'", id="train-override-without-value"),
    P(_t("data.on_bad_record=maybe"), {}, "data.on_bad_record: 'maybe'", id="train-on-bad-record"),
    P(_t("run.on_nonfinite=maybe"), {}, "run.on_nonfinite: 'maybe'", id="train-on-nonfinite"),
    P(_t("run.device=tpu"), {}, "run.device: 'tpu'", id="train-bad-device"),
    P(_t("run.distributed=zero3"), {}, "run.distributed: 'zero3'", id="train-distributed"),
    P(
        _t("run.distributed=fsdp"),
        {},
        "run.distributed=fsdp needs a process group",
        id="train-fsdp-one-process",
    ),
    P(_t("data.understanding_ratio=1.5"), {}, "data.understanding_ratio: 1.5", id="train-ratio"),
    P(_t("data.train_tasks=[captioning]"), {}, "data.train_tasks", id="train-unknown-task"),
    P(_t("data.patch_size=5"), {}, "data.patch_size: 5", id="train-patch-does-not-divide"),
    P(_t("model.hidden_size=30"), {}, "model.hidden_size: 30 is not divisible", id="train-heads"),
    P(_t("model.kind=hf"), {}, "model.path", id="train-hf-without-path"),
    P(_t("lora.quantize_4bit=true"), {}, "lora.quantize_4bit", id="train-4bit-without-lora"),
    P(_t("reduction.sharing=everything"), {}, "reduction.sharing: 'everything'", id="train-sharing"),
    P(_t("reduction.understanding=warp"), {}, "'warp'", id="train-unknown-policy"),
    P(_t("reduction.understanding=himix:start_layer=-3"), {}, "start_layer=-3", id="train-policy-param"),
    P(_t("reduction.understanding=fastv:keep_ratio=2"), {}, "keep_ratio=2", id="train-policy-ratio"),
    P(_t("reduction.understanding=himix:bogus=1"), {}, "'bogus'", id="train-policy-unknown-param"),
    P(_t("reduction.generation=himix"), {}, "cannot serve generation", id="train-policy-wrong-task"),
    # ---- train: the config file and the run folder ---------------------------------------
    P(["train", "{tmp}/absent.yaml", OUT], {}, "{tmp}/absent.yaml", id="train-missing-config"),
    P(["train", "tiny-shapez", OUT], {}, "tiny-shapez", id="train-unknown-recipe"),
    P(["train", "{tmp}/c.yaml", OUT], {"c.yaml": b"optim:\n  lr: 1e-3 \xff\n"}, "{tmp}/c.yaml is not UTF-8", id="train-yaml-not-utf8"),
    P(["train", "{tmp}/c.yaml", OUT], {"c.yaml": "optim: {lr: 1}\noptim: {lr: 2}\n"}, "'optim' is given twice", id="train-yaml-duplicate-key"),
    P(["train", "{tmp}/c.yaml", OUT], {"c.yaml": "- optim\n- data\n"}, "{tmp}/c.yaml: expected a mapping", id="train-yaml-not-a-mapping"),
    P(["train", "{tmp}/c.yaml", OUT], {"c.yaml": "optim: [1, 2\n"}, "{tmp}/c.yaml is not valid YAML", id="train-yaml-broken"),
    P(_t(), {"out/metrics.jsonl": '{"step": 1, "loss": 2.0}\n'}, "holds an earlier run's metrics.jsonl", id="train-out-dir-with-metrics"),
    P(["train", "tiny-shapes", "run.out_dir={tmp}/f/run"], {"f": "a file"}, "{tmp}/f is not a writable folder", id="train-out-dir-under-a-file"),
    P(["train", "tiny-shapes", "run.out_dir={tmp}/f"], {"f": "a file"}, "{tmp}/f' is a file", id="train-out-dir-is-a-file"),
    P(["train", "tiny-shapes", "run.out_dir={run}"], {}, "already holds checkpoints", id="train-out-dir-with-checkpoints"),
    # ---- the data formats --------------------------------------------------------------
    P(_gen(), _jsonl({"image": "img/0.png"}), "line 5 of {tmp}/gen.jsonl: missing or empty 'prompt'", id="jsonl-missing-prompt"),
    P(_gen(), _jsonl({"prompt": 5, "image": "img/0.png"}), "line 5 of {tmp}/gen.jsonl: 'prompt' is 5", id="jsonl-prompt-not-text"),
    P(_gen(), _jsonl({"prompt": "x", "image": "img/nope.png"}), "{tmp}/img/nope.png", id="jsonl-missing-image"),
    P(_gen(), _jsonl({"prompt": "x", "image": "bad.png"}, **{"bad.png": b"not a png"}), "unreadable image", id="jsonl-unreadable-image"),
    P(_gen(), _jsonl("{not json"), "line 5 of {tmp}/gen.jsonl: invalid JSON", id="jsonl-bad-json"),
    P(_gen(), _jsonl("[1, 2]"), "line 5 of {tmp}/gen.jsonl: not a JSON object", id="jsonl-not-an-object"),
    P(_gen(), _jsonl(b'{"prompt": "caf\xe9", "image": "img/0.png"}'), "line 5 of {tmp}/gen.jsonl: not UTF-8", id="jsonl-not-utf8"),
    P(_gen("data.max_length=40"), _jsonl({"prompt": LONG, "image": "img/1.png"}), "line 5 of {tmp}/gen.jsonl: 152 tokens, over data.max_length=40", id="jsonl-over-max-length"),
    P(_gen("model.max_positions=64"), _jsonl({"prompt": LONG, "image": "img/1.png"}), "line 5 of {tmp}/gen.jsonl: 152 tokens, over model.max_positions=64", id="jsonl-over-max-positions"),
    P(_gen(), {**YAML}, "data file not found: {tmp}/gen.jsonl", id="jsonl-missing-file"),
    P(["train", "tiny-shapes", "data.kind=jsonl", "data.paths=[warp:{tmp}/x]", OUT], {}, "warp:{tmp}/x", id="data-unknown-format-prefix"),
    P(LLAVA, _llava({"a": 1}), "{tmp}/llava.json: expected a JSON list", id="llava-not-a-list"),
    P(LLAVA, _llava("[{"), "{tmp}/llava.json is not valid JSON", id="llava-bad-json"),
    P(LLAVA, _llava([*GOOD_LLAVA, {"id": "q", "image": "img/0.png"}]), "record 4 (id 'q') of {tmp}/llava.json: empty conversation", id="llava-no-conversation"),
    P(LLAVA, _llava([*GOOD_LLAVA, {"id": "q", "image": "img/0.png", "conversations": [TURNS[0], {"from": "gpt", "value": ""}]}]), "record 4 (id 'q') of {tmp}/llava.json: empty gpt answer", id="llava-empty-answer"),
    P(LLAVA, _llava([*GOOD_LLAVA, {"id": "q", "conversations": TURNS}]), "record 4 (id 'q') of {tmp}/llava.json: record names no image", id="llava-no-image"),
    P(["train", "{tmp}/tiny.yaml", "data.kind=folder", "data.paths=[{tmp}/img]", "data.understanding_ratio=0", OUT], {**YAML, **IMAGES}, "image '0.png' in {tmp}/img: caption file 0.txt not found", id="folder-missing-caption"),
    P(["train", "tiny-shapes", "data.kind=folder", "data.paths=[{tmp}/none]", OUT], {}, "image folder not found: {tmp}/none", id="folder-missing"),
    # ---- flops -------------------------------------------------------------------------
    P([*FLOPS, "--text-tokens", "1e11", "--image-tokens", "1e11"], {}, "--text-tokens: '1e11'", id="flops-1e11-tokens"),
    P([*FLOPS, "--text-tokens", "100000000000", "--image-tokens", "8"], {}, "--text-tokens: 100000000000", id="flops-too-many-tokens"),
    P([*FLOPS, "--text-tokens", "-1", "--image-tokens", "8"], {}, "--text-tokens: -1", id="flops-negative-tokens"),
    P([*FLOPS, "--text-tokens", "8", "--image-tokens", "many"], {}, "--image-tokens: 'many'", id="flops-non-numeric"),
    P([*FLOPS, "--text-tokens", "0", "--image-tokens", "0"], {}, "--text-tokens=0", id="flops-no-tokens"),
    P(["flops", "--config", "tiny", "--policy", "warp", *TOKENS], {}, "'warp'", id="flops-unknown-policy"),
    P(["flops", "--config", "giant", "--policy", "himix", *TOKENS], {}, "'giant'", id="flops-unknown-preset"),
    P(["flops", "--config", "{tmp}/c.json", "--policy", "himix", *TOKENS], {"c.json": "{bad"}, "{tmp}/c.json' is not valid JSON", id="flops-config-json-broken"),
    P(["flops", "--config", "{tmp}/c.json", "--policy", "himix", *TOKENS], {"c.json": '{"hidden_size": 4}'}, "'num_hidden_layers'", id="flops-config-json-incomplete"),
    P([*FLOPS, *TOKENS, "--set", "bogus=1"], {}, "'bogus'", id="flops-unknown-policy-key"),
    P([*FLOPS, *TOKENS, "--set", "start_layer=x"], {}, "start_layer='x'", id="flops-bad-policy-value"),
    P([*FLOPS, *TOKENS, "--task", "captioning"], {}, "'captioning'", id="flops-unknown-task"),
    # ---- demo (argument checks only: the demo's body is not this catalogue's) -------------
    P(["demo", "--threads", "-1"], {}, "--threads: -1", id="demo-threads"),
    P(["demo", "--eval-understanding", "-1"], {}, "--eval-understanding: -1", id="demo-eval-understanding"),
    P(["demo", "--steps", "0"], {}, "--steps: 0", id="demo-steps"),
    P(["demo", "--probe-samples", "none"], {}, "--probe-samples: 'none'", id="demo-probe-samples"),
    # ---- study -------------------------------------------------------------------------
    P([*STUDY, "--arms", "warp+hmgen@task"], YAML, "warp", id="study-unknown-arm"),
    P([*STUDY, "--arms", "himix+hmgen@everything"], YAML, "'everything'", id="study-unknown-sharing"),
    P([*STUDY, "--seeds", "0"], YAML, "--seeds 0", id="study-zero-seeds"),
    P([*STUDY, "--jobs", "0"], YAML, "--jobs: 0", id="study-zero-jobs"),
    P([*STUDY, "--set", "data.understanding_ratio=1"], YAML, "understanding_ratio=1.0", id="study-cannot-train-generation"),
    P([*STUDY, "--set", "optim.nope=1"], YAML, "optim.nope", id="study-unknown-key"),
    P(["study", "{tmp}/absent.yaml", "--out", "{tmp}/study"], {}, "{tmp}/absent.yaml", id="study-missing-config"),
    P([*STUDY, "--fid-weights", "{tmp}/inception.pt"], YAML, "FID weights {tmp}/inception.pt not found", id="study-fid-weights-missing"),
    P([*STUDY, "--fid-weights", "{tmp}/w.pt", "--generation", "1"], {**YAML, "w.pt": "x"}, "--generation 1: FID needs at least 2", id="study-fid-one-prompt"),
]  # fmt: skip


@pytest.mark.parametrize("argv, files, expected", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(refuses, argv, files, expected):
    refuses(argv, files, expected)


#: Through a real process: what a user sees, warnings and all.
IN_A_PROCESS = ("jsonl-not-utf8", "flops-1e11-tokens")


def test_bad_input_in_a_process(prepare, contract, snapshot_of, tmp_path):
    by_id = {case.id: case.values for case in CASES}
    procs = []
    for name in IN_A_PROCESS:
        argv, files, expected = by_id[name]
        cmd = [sys.executable, "-m", "tokred.cli", *prepare(argv, files)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs.append((expected, subprocess.Popen(cmd, cwd=tmp_path, **pipes)))
    before = snapshot_of(tmp_path)
    for expected, proc in procs:
        out, err = proc.communicate(timeout=300)
        contract(proc.returncode, out, err, [], expected.replace("{tmp}", str(tmp_path)))
    assert snapshot_of(tmp_path) == before

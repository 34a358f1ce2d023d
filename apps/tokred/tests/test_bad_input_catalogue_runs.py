"""The bad-input catalogue, part 2: `eval` and `analyze` on missing, damaged and
mismatched run folders, and their bad options (part 1, test_bad_input_catalogue.py,
holds the rest and says what each case checks).

{run} is a copy of a tiny trained run (conftest.py's `tiny_run`, trained once per
session), damaged by the case's files: a str or bytes replaces a file, None deletes it, a
function rewrites its bytes. The copy must be left as the case made it: evaluating a run
never changes its folder, a damaged checkpoint included.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

STEP = "run/checkpoints/step-000001"
GARBAGE = bytes(range(256)) * 4


def _replace(old: str, new: str):
    return lambda data: data.replace(old.encode(), new.encode())


#: Damage to the run folder, with the substring its error line names.
DAMAGE = {
    "no-checkpoints": ({"run/checkpoints": None}, "{run} holds no complete checkpoint"),
    "binary-config": ({"run/config.yaml": GARBAGE}, "{run}/config.yaml is not UTF-8"),
    "config-not-a-mapping": ({"run/config.yaml": "[1, 2]\n"}, "{run}/config.yaml: expected a mapping"),
    "config-duplicate-key": ({"run/config.yaml": lambda d: d + b"model: {}\n"}, "'model' is given twice"),
    "config-unknown-key": ({"run/config.yaml": lambda d: d + b"extra: {}\n"}, "extra: unknown key"),
    "config-other-model": ({"run/config.yaml": _replace("hidden_size: 32", "hidden_size: 64")}, "model.hidden_size=64 differs from the run's 32 (recorded in {run}/checkpoints/step-000001/run.json)"),
    "config-too-few-positions": ({"run/config.yaml": _replace("max_positions: 512", "max_positions: 16")}, "model.max_positions=16 differs from the run's 512"),
    "config-other-sharing": ({"run/config.yaml": _replace("sharing: shared", "sharing: modality")}, "reduction.sharing='modality' differs from the run's 'shared'"),
    "garbage-codebook": ({"run/vq/codebook.safetensors": GARBAGE}, "{run}/vq/codebook.safetensors is not a VQ codebook"),
    "broken-vq-config": ({"run/vq/vq_config.json": "{"}, "{run}/vq/vq_config.json is not valid JSON"),
    "vq-config-without-fields": ({"run/vq/vq_config.json": '{"format": "tokred-patch-kmeans"}'}, "{run}/vq/vq_config.json"),
    "broken-vocab": ({"run/vocab.json": "garbage"}, "{run}/vocab.json is not valid JSON"),
    "vocab-not-an-object": ({"run/vocab.json": "[1]"}, "{run}/vocab.json: not a unified vocabulary"),
    "missing-vocab": ({"run/vocab.json": None}, "{run}/vocab.json"),
    "truncated-weights": ({f"{STEP}/model.safetensors": lambda d: d[:1000]}, "model.safetensors has 1000 bytes"),
    "garbage-marker": ({f"{STEP}/COMPLETE": "garbage"}, "marker is not readable JSON"),
}  # fmt: skip

P = pytest.param
CASES = [
    *(P(["eval", "{run}"], files, expected, id=f"eval-{name}") for name, (files, expected) in DAMAGE.items()),
    *(
        P(["analyze", "{run}", "--out", "{tmp}/a"], DAMAGE[name][0], DAMAGE[name][1], id=f"analyze-{name}")
        for name in ("no-checkpoints", "binary-config", "config-other-model", "garbage-codebook", "truncated-weights")
    ),
    P(["eval", "{tmp}/nowhere"], {}, "{tmp}/nowhere is not a run folder", id="eval-no-folder"),
    P(["eval", "{tmp}/f"], {"f": "a file"}, "{tmp}/f is not a run folder", id="eval-a-file"),
    P(["eval", "{run}", "--temperature", "nan"], {}, "--temperature: 'nan'", id="eval-temperature-nan"),
    P(["eval", "{run}", "--temperature", "inf"], {}, "--temperature: 'inf'", id="eval-temperature-inf"),
    P(["eval", "{run}", "--temperature", "-1"], {}, "--temperature: -1.0", id="eval-temperature-negative"),
    P(["eval", "{run}", "--understanding", "-1"], {}, "--understanding: -1", id="eval-negative-count"),
    P(["eval", "{run}", "--generation", "-2"], {}, "--generation: -2", id="eval-negative-generation"),
    P(["eval", "{run}", "--batch-size", "0"], {}, "--batch-size: 0", id="eval-zero-batch"),
    P(["eval", "{run}", "--seed", "x"], {}, "--seed: 'x'", id="eval-seed-not-a-number"),
    P(["eval", "{run}", "--mode", "fast"], {}, "'fast'", id="eval-unknown-mode"),
    P(["eval", "{run}", "--policy", "warp"], {}, "'warp'", id="eval-unknown-policy"),
    P(["eval", "{run}", "--mode", "cached", "--policy", "himix"], {}, "--mode cached", id="eval-cached-reduced"),
    P(["eval", "{run}", "--cfg-weight", "2"], {}, "cfg_weight=2.0", id="eval-cfg-weight-not-janus"),
    P(["eval", "{run}", "--out", "{tmp}/f/eval"], {"f": "a file"}, "--out: '{tmp}/f/eval'", id="eval-out-under-a-file"),
    P(["eval", "{run}", "--fid-weights", "{tmp}/inception.pt"], {}, "FID weights {tmp}/inception.pt not found", id="eval-fid-weights-missing"),
    P(["eval", "{run}", "--fid-weights", "{tmp}/w"], {"w/x.pt": "x"}, "FID weights {tmp}/w is not a file", id="eval-fid-weights-a-folder"),
    P(["eval", "{run}", "--fid-weights", "{tmp}/w.pt"], {"w.pt": "not a network"}, "FID weights {tmp}/w.pt is not a TorchScript", id="eval-fid-weights-not-torchscript"),
    P(["analyze", "{tmp}/nowhere"], {}, "{tmp}/nowhere is not a folder", id="analyze-no-folder"),
    P(["analyze", "{tmp}/m"], {"m/notes.txt": "x"}, "{tmp}/m holds neither config.yaml", id="analyze-not-a-run-or-model"),
    P(["analyze", "{run}", "--samples", "0"], {}, "--samples: 0", id="analyze-zero-samples"),
    P(["analyze", "{run}", "--batch-size", "-1"], {}, "--batch-size: -1", id="analyze-negative-batch"),
    P(["analyze", "{run}", "--policy", "nosuch"], {}, "'nosuch'", id="analyze-unknown-policy"),
    P(["analyze", "{run}", "--set", "optim.lr=1"], {}, "--set applies to --tiny only", id="analyze-set-on-a-run"),
    P(["analyze", "{run}", "--out", "{tmp}/f/a"], {"f": "a file"}, "--out: '{tmp}/f/a'", id="analyze-out-under-a-file"),
    P(["analyze", "--tiny", "{run}"], {}, "not both", id="analyze-tiny-and-a-source"),
    P(["analyze", "--tiny", "--out", "{tmp}/a", "--set", "model.num_heads=3"], {}, "model.num_heads=3", id="analyze-tiny-bad-set"),
]  # fmt: skip


@pytest.mark.parametrize("argv, files, expected", CASES)
def test_bad_run_input_is_one_line_exit_2_and_changes_nothing(refuses, argv, files, expected):
    refuses(argv, files, expected)

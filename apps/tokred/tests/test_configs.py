"""Every shipped recipe loads, validates, builds its model and trains on a tiny stand-in.

The stand-ins (`tokred_train.testing`) are the recipes' own architectures at toy size
(hidden 32) with a word-level tokenizer, saved into tmp_path so `model.path` points at a
real local folder: Janus for janus-pro-1b-qlora (4-bit through transformers'
BitsAndBytesConfig, which bitsandbytes 0.45+ runs on the CPU too) and Emu3 for emu3-full.
Their text stacks are deep enough for the recipes' HMGen settings (3 shallow layers need 7
layers, 5 need 11), so the shipped reduction, LoRA and gradient checkpointing run as is;
only the data (the embedded shapes set) and the step counts are swapped.
"""

from __future__ import annotations

import pytest
import torch
from tokred.recipes import shipped_configs
from tokred_core import TokredError
from tokred_train import build_model, load_config, save_config, train
from tokred_train.config import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_the_recipes_are_shipped():
    assert set(shipped_configs()) == {
        "tiny-shapes",
        "demo",
        "study",
        "study-image-rich",
        "janus-pro-1b-qlora",
        "emu3-full",
    }


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_every_recipe_validates_and_round_trips(name, tmp_path):
    config = load_config(shipped_configs()[name])
    assert isinstance(config, TrainConfig)
    assert load_config(save_config(config, tmp_path / "config.yaml")) == config


def test_tiny_shapes_builds_with_and_without_reduction():
    config = load_config(shipped_configs()["tiny-shapes"])
    built = build_model(config, vocab_size=150)
    assert built.model_type == "llama" and built.num_layers == 4
    assert built.trainable_parameters == built.total_parameters
    reduced = load_config(
        config,
        [
            "reduction.understanding=himix",
            "reduction.generation=hmgen",
            "reduction.generation.options.num_shallow=1",
            "reduction.sharing=task",
        ],
    )
    built = build_model(reduced, vocab_size=150)
    assert built.trainable_parameters > 0 and built.handle.sharing.value == "task"


# The recipes' own settings, on the embedded shapes data, for two tiny steps.
SMOKE = [
    "data.kind=shapes",
    "data.paths=[]",
    "data.num_train=8",
    "data.num_val=2",
    "data.image_size=16",
    "data.questions_per_image=1",
    "optim.batch_size=2",
    "optim.grad_accum=1",
    "optim.max_steps=2",
    "optim.warmup_steps=1",
    "run.progress=false",
    "run.tensorboard=false",
    "eval.max_samples=2",
]


def test_janus_qlora_recipe_trains_on_a_tiny_janus(tmp_path):
    import bitsandbytes as bnb
    from tokred_train.testing import save_tiny_janus, shapes_texts

    folder = save_tiny_janus(tmp_path / "janus", shapes_texts(8, 2), layers=8)
    config = load_config(shipped_configs()["janus-pro-1b-qlora"], [f"model.path={folder}"])
    built = build_model(config, device="cpu")
    assert built.model_type == "janus" and built.num_layers == 8
    q = built.base.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, bnb.nn.Linear4bit) and q.base_layer.weight.dtype == torch.uint8
    # 8 layers x 2 image projection sets (sharing: task) x q/k/v, each with a LoRA adapter.
    assert len(built.lora.image_projections) == 48
    trainable = [n for n, p in built.model.named_parameters() if p.requires_grad]
    head = [n for n in trainable if "generation_head.modules_to_save" in n]
    assert head and all("lora_" in n or n in head for n in trainable)
    run = load_config(config, [*SMOKE, f"run.out_dir={tmp_path / 'run'}"])
    result = train(run)
    assert [r["step"] for r in result.history] == [1, 2]
    assert all(r["loss_generation"] is not None for r in result.history)
    assert (tmp_path / "run" / "summary.json").is_file()


def test_emu3_full_recipe_trains_on_a_tiny_emu3(tmp_path):
    from tokred_train.testing import save_tiny_emu3, shapes_texts

    folder = save_tiny_emu3(tmp_path / "emu3", shapes_texts(8, 2), layers=12)
    config = load_config(shipped_configs()["emu3-full"], [f"model.path={folder}"])
    built = build_model(config, device="cpu")
    assert built.model_type == "emu3" and built.num_layers == 12 and built.lora is None
    assert built.trainable_parameters == built.total_parameters
    attn = built.base.model.text_model.layers[0].self_attn
    assert set(attn.image_proj) == {"understanding", "generation"}
    assert config.run.distributed == "fsdp"
    overrides = [*SMOKE, "run.bf16=false", "run.distributed=ddp", f"run.out_dir={tmp_path / 'run'}"]
    run = load_config(config, overrides)
    result = train(run)
    assert [r["step"] for r in result.history] == [1, 2]


def test_missing_model_path_is_one_clear_error(tmp_path):
    config = load_config(shipped_configs()["emu3-full"], [f"model.path={tmp_path / 'nope'}"])
    with pytest.raises(TokredError, match="config.json not found"):
        build_model(config)


def test_emu3_full_recipe_trains_under_fsdp_on_two_gloo_ranks(tmp_path):
    """The recipe as shipped (full fine-tuning, gradient checkpointing, HiMix + HMGen with
    one projection set per task) under `run.distributed=fsdp`, through `tokred train`
    launched by torchrun, on a tiny Emu3: two steps, then eval of its sharded checkpoint
    in one process."""
    import json
    import subprocess
    import sys

    from tokred_train.testing import save_tiny_emu3, shapes_texts, torchrun_env

    folder = save_tiny_emu3(tmp_path / "emu3", shapes_texts(8, 2), layers=12)
    out = tmp_path / "run"
    script = tmp_path / "tokred_main.py"
    script.write_text("import sys\nfrom tokred.cli import main\nsys.exit(main())\n")
    overrides = [*SMOKE, "optim.batch_size=1", "run.bf16=false"]  # fsdp: the recipe's own
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), "train", "emu3-full", f"model.path={folder}", f"run.out_dir={out}",
        "run.threads=1", *overrides,
    ]  # fmt: skip
    env = torchrun_env()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["samples"] == 2 for r in rows)
    final = out / "checkpoints" / "step-000002"
    assert (final / "shards").is_dir() and (final / "model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # One process reads the sharded checkpoint back (DCP reshards 2 -> 1) and evaluates.
    from tokred.cli import main

    assert main(["eval", str(out), "--understanding", "2", "--generation", "1"]) == 0
    result = json.loads((out / "eval" / "eval.json").read_text())
    assert result["understanding"]["total"] == 2

"""The training loop on the tiny model: full fine-tuning, LoRA, QLoRA, crash and resume.

Everything is tiny (hidden 32, 3 layers, 16x16 images of 16 tokens, a handful of steps)
so the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tokred_core import TokredError
from tokred_train import load_config, train
from tokred_train.run.checkpoint import LATEST, MARKER, find_latest_checkpoint, list_checkpoints
from tokred_train.testing import HIMIX_HMGEN, retrain, tiny_run_config
from tokred_train.testing import changed_parameters as changed
from tokred_train.testing import snapshot_parameters as snapshot

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

REDUCED = HIMIX_HMGEN


def tiny(tmp_path, name="run", **sections):
    return tiny_run_config(tmp_path / name, **sections)


def test_full_finetuning_writes_run_and_changes_weights(tmp_path):
    cfg = tiny(tmp_path, reduction=REDUCED, run={"tensorboard": True, "log_every": 2})
    result = train(cfg, stop_after_step=0)  # builds everything, runs no step
    result, moved = retrain(result)
    assert "model.layers.0.self_attn.q_proj.weight" in moved
    assert "model.layers.1.self_attn.image_proj.understanding.k_proj.weight" in moved
    assert "model.layers.2.self_attn.image_proj.generation.q_proj.weight" in moved
    run = result.run_dir
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] == [h["step"] for h in result.history]
    for key in ("loss", "loss_understanding", "loss_generation", "lr", "grad_norm", "tokens_per_s"):
        assert all(r[key] is not None for r in rows), key
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["steps"] == 3 and summary["tokens_per_s"] > 0 and summary["peak_memory_bytes"] > 0
    )
    assert {"val_loss_understanding", "val_loss_generation"} <= set(result.metrics)
    assert (run / "config.yaml").is_file() and (run / "vocab.json").is_file()
    assert (run / "vq" / "codebook.safetensors").is_file()
    assert any((run / "tensorboard").iterdir())
    assert load_config(run / "config.yaml") == cfg
    assert [c.step for c in list_checkpoints(run)] == [3]
    # A second run into the same folder without resume is refused.
    with pytest.raises(TokredError, match="run.resume=true"):
        train(cfg)


def test_lora_trains_adapters_only(tmp_path):
    cfg = tiny(tmp_path, reduction=REDUCED, lora={"enabled": True, "r": 4})
    result = train(cfg, stop_after_step=0)
    report = result.built.lora
    # 3 layers x 2 image sets x (q, k, v) image projections carry adapters.
    assert len(report.image_projections) == 18 and not report.frozen_image_projections
    result, moved = retrain(result)
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable
    assert all("lora_" in n for n in trainable)
    assert any("image_proj.generation.q_proj.lora_B" in n for n in moved)


def test_qlora_keeps_4bit_base_frozen(tmp_path):
    import bitsandbytes as bnb

    cfg = tiny(tmp_path, reduction=REDUCED, lora={"enabled": True, "quantize_4bit": True, "r": 4})
    result = train(cfg, stop_after_step=0)
    base = result.built.base
    q = base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q, bnb.nn.Linear4bit) and q.weight.dtype == torch.uint8
    img = base.model.layers[0].self_attn.image_proj.understanding.q_proj.base_layer
    assert isinstance(img, bnb.nn.Linear4bit)
    before = snapshot(result.model)  # its dtypes tell the frozen 4-bit weights
    shutil.rmtree(cfg.run.out_dir)
    result = train(cfg)
    moved = changed(before, result.model)
    assert moved and all("lora_" in n for n in moved)
    frozen_4bit = [
        n for n in before if n.endswith("base_layer.weight") and before[n].dtype == torch.uint8
    ]
    assert frozen_4bit and not moved & set(frozen_4bit)


def test_crash_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    sections = dict(
        optim={"max_steps": 6, "grad_accum": 2, "batch_size": 3},
        data={"understanding_ratio": 0.4},
        lora={"enabled": True, "r": 4, "dropout": 0.1},  # dropout: RNG state must resume too
        reduction=REDUCED,
        eval={"every": 1, "at_end": False, "max_samples": 2},
    )

    def evaluator(model, data, step):  # samples, like a generation metric would
        return {"draw": torch.rand(1).item()}

    full = train(tiny(tmp_path, "full", run={"ckpt_every": 2}, **sections), evaluator=evaluator)
    crashed_cfg = tiny(tmp_path, "crash", run={"ckpt_every": 2, "keep_checkpoints": 1}, **sections)
    crashed = train(crashed_cfg, stop_after_step=3, evaluator=evaluator)
    assert crashed.stopped_early and not (crashed.run_dir / "summary.json").exists()
    assert [c.step for c in list_checkpoints(crashed.run_dir)] == [2]
    resumed = train(crashed_cfg, overrides=["run.resume=true"], evaluator=evaluator)
    assert resumed.start_step == 2 and [h["step"] for h in resumed.history] == [3, 4, 5, 6]
    for mine, ref in zip(resumed.history, full.history[2:], strict=True):
        for key in ("loss", "loss_understanding", "loss_generation", "grad_norm", "lr"):
            assert mine[key] == pytest.approx(ref[key], abs=1e-6, rel=0), (mine["step"], key)
    rows = [json.loads(x) for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the crashed run's step 3 was replaced
    val = [json.loads(x) for x in (resumed.run_dir / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [1, 2, 3, 4, 5]  # validation of the last step: at_end


def test_resume_ignores_partial_checkpoints(tmp_path):
    cfg = tiny(tmp_path, run={"ckpt_every": 1, "keep_checkpoints": 0}, optim={"max_steps": 2})
    train(cfg, stop_after_step=2)
    root = tmp_path / "run" / "checkpoints"
    # A crash mid-write of step 3 leaves a temp folder; a step-000004 without its marker and
    # a `latest` pointing at it stand for a non-atomic copy gone wrong.
    shutil.copytree(root / "step-000002", root / ".tmp-step-000003-999")
    shutil.copytree(root / "step-000002", root / "step-000004")
    (root / "step-000004" / MARKER).unlink()
    (root / LATEST).write_text("step-000004\n")
    assert find_latest_checkpoint(tmp_path / "run").step == 2
    result = train(cfg, overrides=["run.resume=true", "optim.max_steps=3"])
    assert result.start_step == 2 and [h["step"] for h in result.history] == [3]
    assert not (root / ".tmp-step-000003-999").exists()  # leftovers were cleaned up
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [1, 2, 3]


def test_resume_refuses_a_different_model(tmp_path):
    cfg = tiny(tmp_path, run={"ckpt_every": 1})
    train(cfg, stop_after_step=1)
    with pytest.raises(TokredError, match="model.num_layers"):
        train(cfg, overrides=["run.resume=true", "model.num_layers=2"])


def test_single_task_runs(tmp_path):
    result = train(tiny(tmp_path, data={"understanding_ratio": 1.0}, optim={"max_steps": 1}))
    assert result.history[0]["loss_generation"] is None
    assert result.history[0]["loss_understanding"] == pytest.approx(result.history[0]["loss"])


def test_gradient_checkpointing_gives_the_same_steps(tmp_path):
    common = dict(reduction=REDUCED, optim={"max_steps": 2}, eval={"at_end": False})
    plain = train(tiny(tmp_path, "plain", **common))
    ckpt = train(tiny(tmp_path, "gc", run={"gradient_checkpointing": True}, **common))
    assert ckpt.built.base.is_gradient_checkpointing
    for a, b in zip(plain.history, ckpt.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    result = train(tiny(tmp_path, run={"bf16": True}, optim={"max_steps": 1}))
    assert result.summary["bf16_autocast"] is True
    assert result.history[0]["loss"] > 0


def test_hf_model_with_registered_io_trains_with_qlora(tmp_path, monkeypatch):
    """kind hf: a local Llama folder, 4-bit through transformers, the family's ModelIO
    (vocab, image tokenizer) from the registry; here the embedded pair stands in for a real one."""
    import bitsandbytes as bnb
    from tokred_models.tiny import TinyUnifiedConfig
    from tokred_train.data.pipeline import build_embedded_data
    from tokred_train.families import registry as families
    from transformers import LlamaForCausalLM

    cfg = tiny(tmp_path, reduction=REDUCED)
    io = build_embedded_data(cfg.data)
    calls = []

    def factory(model_dir, data_cfg, model):
        calls.append((model_dir, model))
        return families.ModelIO(io.vocab, io.image_tokenizer)

    monkeypatch.setitem(families._IO, "llama", factory)
    # The tiny model's Llama (the config's model fields), saved as a Hugging Face folder.
    tiny_llama = TinyUnifiedConfig.from_fields(cfg.model, io.vocab.vocab_size, seed=None)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama.to_llama_config())
    llama.save_pretrained(tmp_path / "llama")
    overrides = [
        "model.kind=hf",
        f"model.path={tmp_path / 'llama'}",
        "lora.enabled=true",
        "lora.quantize_4bit=true",
        "lora.r=4",
        f"run.out_dir={tmp_path / 'hf'}",
    ]
    result = train(cfg, overrides=[*overrides, "optim.max_steps=1"], stop_after_step=0)
    assert calls and calls[0][1] is result.built.base  # the factory saw the loaded model
    q = result.built.base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q, bnb.nn.Linear4bit) and q.weight.dtype == torch.uint8
    result, moved = retrain(result, cfg, overrides)
    assert moved and all("lora_" in n for n in moved)
    assert [h["step"] for h in result.history] == [1, 2, 3]

"""Real model families through `tokred train`: Janus (QLoRA, its own loss path) and Emu3
(full fine-tuning, one vocabulary), each on a tiny local stand-in folder with a tokenizer.

The Janus loss path is checked against two references: `janus_unified_forward` (the
token-weighted mean over both heads) and, for understanding, Hugging Face's own
`JanusForConditionalGeneration.forward(input_ids, pixel_values, labels)`.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from tokred_core import Task, TokredError
from tokred_train import load_config, train
from tokred_train.data.collate import IGNORE_INDEX
from tokred_train.run.step import TrainStep, batch_targets
from tokred_train.testing import (
    HIMIX_HMGEN,
    retrain,
    save_tiny_chameleon,
    save_tiny_janus,
    tiny_run_config,
    tiny_run_texts,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def config(tmp_path, folder, name="run", reduction=None, **sections):
    """A tiny run of the stand-in `folder`, reduced by HIMIX_HMGEN updated with `reduction`."""
    reduction = {**HIMIX_HMGEN, **(reduction or {})}
    return tiny_run_config(tmp_path / name, folder, reduction=reduction, **sections)


def mixed_batch(data):
    return data.collate({"understanding": [0, 3, 1], "generation": [2, 0]})


# ---- Janus ---------------------------------------------------------------------------


def test_janus_batches_carry_placeholders_pixels_and_codes(tmp_path, janus_dir):
    result = train(config(tmp_path, janus_dir), stop_after_step=0)
    data, janus = result.data, result.built.base
    assert data.loss_path == "janus"
    batch = mixed_batch(data)
    tasks = batch["layout"].tasks
    placeholder = janus.config.image_token_id
    codes = batch["image_code_mask"]
    # Raw codes share ids with text (code 6 may equal the placeholder id): the mask tells.
    per_row = ((batch["input_ids"] == placeholder) & ~codes).sum(1)
    assert per_row.tolist() == [16 if t == Task.UNDERSTANDING else 0 for t in tasks.tolist()]
    assert batch["pixel_values"].shape == (3, 3, 16, 16)
    assert codes.sum(1).tolist() == [0, 0, 0, 16, 16]
    # Code positions hold the generation samples' VQ codes and are their own targets.
    gen = data.train["generation"].codes[[2, 0]]
    assert torch.equal(batch["input_ids"][codes].view(2, 16), gen)
    assert torch.equal(batch["labels"][codes].view(2, 16), gen)
    targets = batch_targets(batch, "janus")
    assert targets.image.counts == (0, 32)
    assert targets.text.counts[1] == 2  # the end-of-image marker after each generated image


def test_janus_step_matches_unified_forward_and_hf_understanding_loss(tmp_path, janus_dir):
    from tokred_models.janus_generation import janus_unified_forward

    result = train(
        config(tmp_path, janus_dir, reduction={"understanding": "none", "generation": "none"}),
        stop_after_step=0,
    )
    data, janus = result.data, result.built.base
    janus.eval()
    step = TrainStep(janus, "janus")
    batch = mixed_batch(data)
    targets = batch_targets(batch, "janus")
    with torch.no_grad():
        sums = step(batch, targets)
        codes = batch["image_code_mask"]
        ref = janus_unified_forward(
            janus,
            batch["input_ids"],
            codes,
            text_labels=batch["labels"].masked_fill(codes, IGNORE_INDEX),
            image_labels=batch["labels"].masked_fill(~codes, IGNORE_INDEX),
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
        )
    total = sum(targets.counts)
    torch.testing.assert_close(sums.sum() / total, ref.loss, rtol=1e-5, atol=1e-6)

    # Understanding alone against Hugging Face's own forward (text loss only).
    batch = data.collate({"understanding": [0, 1, 2]})
    targets = batch_targets(batch, "janus")
    with torch.no_grad():
        sums = step(batch, targets)
        hf = janus(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            use_cache=False,
        )
    assert sums[1] == 0
    torch.testing.assert_close(sums[0] / targets.counts[0], hf.loss, rtol=1e-5, atol=1e-6)


def test_janus_trains_with_qlora_and_reduction(tmp_path, janus_dir):
    import bitsandbytes as bnb

    lora = {
        "enabled": True,
        "quantize_4bit": True,
        "r": 4,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    }
    cfg = config(tmp_path, janus_dir, lora=lora, run={"gradient_checkpointing": True})
    result = train(cfg, stop_after_step=0)
    q = result.built.base.model.language_model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q, bnb.nn.Linear4bit)
    result, moved = retrain(result)
    assert moved and all("lora_" in n for n in moved)
    assert any("image_proj.generation" in n for n in moved)
    assert any("image_proj.understanding" in n for n in moved)
    for row in result.history:
        assert math.isfinite(row["loss_understanding"]) and math.isfinite(row["loss_generation"])
    assert math.isfinite(result.metrics["val_loss_generation"])
    assert result.summary["model_type"] == "janus"


def test_janus_on_real_formats_reads_understanding_pixels_per_batch(
    tmp_path, real_data, monkeypatch
):
    from tokred_train.data import image_source

    texts = [
        *tiny_run_texts(),
        "what colour is it?",
        "red",
        "blue",
        "a red picture",
        "a blue picture",
    ]
    folder = save_tiny_janus(tmp_path / "janus", texts)
    decoded = []
    read = image_source.ImageSource.image
    monkeypatch.setattr(
        image_source.ImageSource, "image", lambda self, i: decoded.append(i) or read(self, i)
    )
    paths = f"[llava:{real_data / 'llava.json'}, jsonl:{real_data / 'gen.jsonl'}]"
    cfg = config(
        tmp_path,
        folder,
        data={
            "kind": "llava",
            "paths": paths,
            "image_root": str(real_data / "img"),
            "on_bad_image": "skip",
            "num_val": 1,
        },
    )
    result = train(cfg, stop_after_step=0)
    data = result.data
    assert data.sizes() == {"understanding": 5, "generation": 5}
    # Building encodes the 6 generation targets; understanding pixels are not read yet.
    assert len(decoded) == 6
    assert data.train["understanding"].codes.shape == (5, 0)
    batch = data.collate({"understanding": [4, 1], "generation": [0]})
    assert len(decoded) == 8 and batch["pixel_values"].shape == (2, 3, 16, 16)
    # The pixels are the records' own images: the bottom row is the colour they answer.
    colours = {"red": (220, 30, 30), "blue": (30, 60, 220)}
    for k, idx in enumerate([4, 1]):
        answer = data.train["understanding"].records[idx]["answer"]
        want = torch.tensor(colours[answer], dtype=torch.float32) / 255 * 2 - 1
        got = batch["pixel_values"][k, :, -1, :].mean(-1)
        torch.testing.assert_close(got, want, atol=0.02, rtol=0)
    shutil.rmtree(cfg.run.out_dir)
    result = train(load_config(cfg, ["optim.max_steps=1"]))
    assert result.history[0]["loss_understanding"] is not None


# ---- Emu3 ----------------------------------------------------------------------------


def test_emu3_images_are_written_as_emu3_writes_them(tmp_path, emu3_dir):
    result = train(config(tmp_path, emu3_dir), stop_after_step=0)
    data, vq, tok = result.data, result.vq, result.data.vocab.tokenizer
    assert data.loss_path == "causal_lm" and vq.grid == (8, 8)
    batch = data.collate({"generation": [1]})
    ids = batch["input_ids"][0].tolist()
    start = ids.index(tok.convert_tokens_to_ids("<|image start|>"))
    end = ids.index(tok.convert_tokens_to_ids("<|image end|>"))
    block = ids[start + 1 : end]
    assert tok.decode(block[:3]).replace(" ", "") == "8*8"
    assert block[3] == tok.convert_tokens_to_ids("<|image token|>")
    assert block[-1] == tok.convert_tokens_to_ids("<|extra_201|>")
    rows = torch.tensor(block[4:-1])
    codes = vq.token_ids_to_codes(rows[None])
    assert torch.equal(codes[0], data.train["generation"].codes[1])
    # The whole block is the generation target, the start marker is not.
    labels = batch["labels"][0].tolist()
    assert labels[start] == IGNORE_INDEX and labels[start + 1 : end + 1] == ids[start + 1 : end + 1]


def test_emu3_trains_every_weight(tmp_path, emu3_dir):
    cfg = config(tmp_path, emu3_dir, optim={"max_steps": 2})
    result = train(cfg, stop_after_step=0)
    result, moved = retrain(result)
    assert "model.text_model.layers.0.self_attn.image_proj.generation.q_proj.weight" in moved
    assert "model.text_model.layers.0.mlp.up_proj.weight" in moved
    assert all(math.isfinite(r["loss"]) for r in result.history)


# ---- Chameleon -----------------------------------------------------------------------


def test_chameleon_trains_on_its_visual_tokens(tmp_path):
    folder = save_tiny_chameleon(tmp_path / "chameleon", tiny_run_texts())
    cfg = config(tmp_path, folder, optim={"max_steps": 2})
    result = train(cfg, stop_after_step=0)
    data, vq, tok = result.data, result.vq, result.data.vocab.tokenizer
    batch = data.collate({"understanding": [0], "generation": [0]})
    for row, task_codes in (
        (0, data.train["understanding"].codes[0]),
        (1, data.train["generation"].codes[0]),
    ):
        ids = batch["input_ids"][row].tolist()
        start = ids.index(tok.convert_tokens_to_ids("<racm3:break>"))
        end = ids.index(tok.convert_tokens_to_ids("<eoss>"))
        assert torch.equal(
            vq.token_ids_to_codes(torch.tensor([ids[start + 1 : end]]))[0], task_codes
        )
    result, moved = retrain(result)
    assert "model.layers.0.self_attn.q_proj.weight" in moved
    assert all(math.isfinite(r["loss"]) for r in result.history)


def test_family_without_tokenizer_is_one_clear_error(tmp_path, emu3_dir):
    bare = tmp_path / "bare"
    shutil.copytree(emu3_dir, bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    with pytest.raises(TokredError, match="no usable tokenizer"):
        train(config(tmp_path, bare), stop_after_step=0)


# ---- evaluation of family runs ----------------------------------------------------------


def test_janus_run_is_evaluated_on_both_tasks(tmp_path, janus_dir):
    from tokred_train.eval.run import evaluate_run, load_run

    result = train(config(tmp_path, janus_dir, optim={"max_steps": 1}))
    run = load_run(result.run_dir)
    out = evaluate_run(run, num_understanding=6, num_generation=3, batch_size=4)
    u, g = out["understanding"], out["generation"]
    assert u["total"] == 6 and 0 <= u["accuracy"] <= 1 and u["mode"] == "reduced"
    assert g["total"] == 3 and set(g["per_attribute"]) >= {"kind", "color", "position"}
    assert (result.run_dir / "eval" / "eval.json").is_file()


def test_emu3_run_writes_images_in_its_own_block_format(tmp_path, emu3_dir):
    """Generation forces Emu3's size prefix, row ends and end of frame and picks codes
    among its visual tokens; the codes come back through the VQ decoder to the detector."""
    from tokred_train.eval import generate_image_codes, image_writing
    from tokred_train.eval.run import evaluate_run, load_run

    result = train(config(tmp_path, emu3_dir, optim={"max_steps": 1}))
    run = load_run(result.run_dir)
    code_ids, template = image_writing(run.vocab, run.vq)
    assert sum(t is None for t in template) == 64 and len(template) == 64 + 8 + 4 + 1
    codes, _ = generate_image_codes(run.model, run.vocab, run.vq, ["a red circle"], batch_size=1)
    assert codes.shape == (1, 64) and int(codes.min()) >= 0 and int(codes.max()) < 8
    # Written back as Emu3 writes it, the block equals the template at every fixed slot.
    block = run.vocab.image_ids(codes[0]).tolist()
    assert all(t is None or t == b for t, b in zip(template, block, strict=True))
    out = evaluate_run(run, num_understanding=4, num_generation=2, batch_size=2)
    assert out["understanding"]["total"] == 4
    assert out["generation"]["total"] == 2 and "all" in out["generation"]["per_attribute"]


def test_chameleon_run_names_why_generation_is_not_scored(tmp_path):
    from tokred_train.eval.run import evaluate_run, load_run

    folder = save_tiny_chameleon(tmp_path / "chameleon", tiny_run_texts())
    result = train(config(tmp_path, folder, optim={"max_steps": 1}))
    out = evaluate_run(load_run(result.run_dir), num_understanding=2, num_generation=2)
    assert out["understanding"]["total"] == 2
    assert "cannot decode" in out["generation"]["skipped"]


def test_janus_attention_allocation_reads_siglip_images(tmp_path, janus_dir):
    """The probe runs Janus's own input path: understanding queries attend to the image
    segment (SigLIP features at the placeholders), shares sum to one per layer."""
    from tokred_core import Segment
    from tokred_train.eval.allocation import attention_allocation

    cfg = config(tmp_path, janus_dir, lora={"enabled": True, "r": 4})
    result = train(cfg, stop_after_step=0)
    alloc = attention_allocation(result.model, result.data, num_samples=4, batch_size=2)
    und, gen = alloc.shares(Task.UNDERSTANDING), alloc.shares(Task.GENERATION)
    assert und.shape[0] == gen.shape[0] == result.built.num_layers
    torch.testing.assert_close(und.sum(-1), torch.ones(und.shape[0], dtype=und.dtype))
    assert bool((und[:, Segment.IMAGE] > 0).all())
    assert alloc.num_samples[Task.UNDERSTANDING] == 4


def test_janus_qlora_trains_its_generation_head_in_full(tmp_path, janus_dir):
    """lora.modules_to_save keeps the head out of 4 bits and trains all its weights."""
    lora = {
        "enabled": True,
        "quantize_4bit": True,
        "r": 4,
        "modules_to_save": ["generation_head"],
    }
    cfg = config(tmp_path, janus_dir, lora=lora, optim={"max_steps": 2})
    result = train(cfg, stop_after_step=0)
    head = result.built.base.model.generation_head
    assert type(head).__name__ == "ModulesToSaveWrapper"
    assert type(head.original_module.vision_head).__name__ == "Linear"  # not Linear4bit
    assert result.built.lora.saved_modules == ["model.generation_head"]
    result, moved = retrain(result)
    head_moved = {n for n in moved if "generation_head.modules_to_save" in n}
    assert any(n.endswith("vision_head.weight") for n in head_moved)
    assert all("lora_" in n or n in head_moved for n in moved)
    with pytest.raises(TokredError, match="lora.modules_to_save: no module named 'nope'"):
        train(config(tmp_path, janus_dir, name="bad", lora={**lora, "modules_to_save": ["nope"]}))


def test_janus_qlora_run_resumes_exactly(tmp_path, janus_dir):
    """A Janus QLoRA run (4-bit base, adapters, a fully trained head, reduction) crashed
    after step 3 and resumed from its step-2 checkpoint repeats the uninterrupted losses."""
    lora = {"enabled": True, "quantize_4bit": True, "r": 4, "modules_to_save": ["generation_head"]}
    sections = dict(lora=lora, optim={"max_steps": 4}, eval={"at_end": False})
    full = train(config(tmp_path, janus_dir, "full", run={"ckpt_every": 2}, **sections))
    crash_cfg = config(tmp_path, janus_dir, "crash", run={"ckpt_every": 2}, **sections)
    train(crash_cfg, stop_after_step=3)
    resumed = train(crash_cfg, overrides=["run.resume=true"])
    assert resumed.start_step == 2 and [h["step"] for h in resumed.history] == [3, 4]
    for mine, ref in zip(resumed.history, full.history[2:], strict=True):
        for key in ("loss", "loss_understanding", "loss_generation", "grad_norm"):
            assert mine[key] == pytest.approx(ref[key], abs=1e-6, rel=0), (mine["step"], key)


def test_guided_janus_eval_and_guidance_refused_elsewhere(tmp_path, janus_dir, emu3_dir):
    from tokred_train.eval.run import evaluate_run, load_run

    janus = load_run(train(config(tmp_path, janus_dir, "j", optim={"max_steps": 1})).run_dir)
    out = evaluate_run(janus, num_understanding=2, num_generation=2, cfg_weight=5.0)
    assert out["generation"]["total"] == 2 and out["settings"]["cfg_weight"] == 5.0
    emu3 = load_run(train(config(tmp_path, emu3_dir, "e", optim={"max_steps": 1})).run_dir)
    with pytest.raises(TokredError, match="cfg_weight=5.0: classifier-free guidance"):
        evaluate_run(emu3, num_understanding=2, num_generation=2, cfg_weight=5.0)
    assert not (tmp_path / "e" / "eval").exists()


# ---- the synergy-aware strategies on real families -----------------------------------

STRATEGIES = {
    "full-steps+distill": ({}, {"full_steps": 0.5, "distill": 1.0}, {}),
    "pcgrad": ({}, {"surgery": "pcgrad"}, {}),
    "gate": ({}, {"gate_threshold": 1.0}, {"conflict_every": 1, "conflict_samples": 2}),
    "aligned": (
        {
            "understanding": "aligned:start_layer=1",
            "generation": "aligned:start_layer=1",
            "sharing": "aligned",
        },
        {},
        {},
    ),
}


@pytest.mark.parametrize("family", ["janus", "emu3"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_a_real_family(tmp_path, family, name, janus_dir, emu3_dir):
    reduction, strategy, run = STRATEGIES[name]
    folder = janus_dir if family == "janus" else emu3_dir
    cfg = config(tmp_path, folder, reduction=reduction, strategy=strategy, run=run,
                 optim={"max_steps": 2}, eval={"at_end": False})  # fmt: skip
    result = train(cfg)
    assert [h["step"] for h in result.history] == [1, 2]
    for h in result.history:
        assert math.isfinite(h["loss_understanding"]) and math.isfinite(h["loss_generation"])
        assert h["grad_norm"] > 0

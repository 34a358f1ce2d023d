"""Every shipped recipe loads, validates and builds its model on a tiny stand-in.

The stand-ins are the recipes' own architectures at toy size (hidden 32), saved with
save_pretrained into tmp_path so `model.path` points at a real local folder: Janus for
janus-pro-1b-qlora (4-bit through transformers' BitsAndBytesConfig, which bitsandbytes
0.45+ runs on the CPU too) and Emu3 for emu3-full. Their text stacks are deep enough for
the recipes' HMGen settings (3 shallow layers need 7 layers, 5 need 11), so the shipped
reduction is exercised as is.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tokred.commands.train import shipped_configs
from tokred_core import TokredError
from tokred_train import build_model, load_config, save_config, train
from tokred_train.config import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

TEXT = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_janus(layers: int = 8):
    from transformers import JanusConfig, JanusForConditionalGeneration

    vision = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=32,
        mlp_ratio=2.0,
        num_image_tokens=4,
    )
    vq = dict(
        embed_dim=8,
        num_embeddings=16,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        projection_dim=32,
        image_token_embed_dim=32,
        num_hidden_layers=1,
    )
    config = JanusConfig(
        text_config=dict(model_type="llama", num_hidden_layers=layers, **TEXT),
        vision_config=vision,
        vq_config=vq,
        image_token_id=90,
    )
    return JanusForConditionalGeneration(config)


def tiny_emu3(layers: int = 12):
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    vq = dict(
        codebook_size=8,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        attn_resolutions=[],
        hidden_size=8,
        temporal_downsample_factor=1,
    )
    config = Emu3Config(
        text_config=dict(num_hidden_layers=layers, **TEXT),
        vq_config=vq,
        vocabulary_map={"<image>": 90},
    )
    return Emu3ForConditionalGeneration(config)


def save(model, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder


def test_the_recipes_are_shipped():
    assert set(shipped_configs()) == {"tiny-shapes", "janus-pro-1b-qlora", "emu3-full"}


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


def test_janus_qlora_recipe_builds_on_a_tiny_janus(tmp_path):
    import bitsandbytes as bnb

    folder = save(tiny_janus(), tmp_path / "janus")
    config = load_config(shipped_configs()["janus-pro-1b-qlora"], [f"model.path={folder}"])
    built = build_model(config, device="cpu")
    assert built.model_type == "janus" and built.num_layers == 8
    q = built.base.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, bnb.nn.Linear4bit) and q.base_layer.weight.dtype == torch.uint8
    # 8 layers x 2 image projection sets (sharing: task) x q/k/v, each with a LoRA adapter.
    assert len(built.lora.image_projections) == 48
    trainable = [n for n, p in built.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # Training it needs the Janus loss path, which `tokred train` names instead of faking.
    run = load_config(config, [f"run.out_dir={tmp_path / 'run'}"])
    with pytest.raises(TokredError, match="janus_unified_forward"):
        train(run)
    assert not (tmp_path / "run").exists()


def test_emu3_full_recipe_builds_on_a_tiny_emu3(tmp_path):
    folder = save(tiny_emu3(), tmp_path / "emu3")
    config = load_config(shipped_configs()["emu3-full"], [f"model.path={folder}"])
    built = build_model(config, device="cpu")
    assert built.model_type == "emu3" and built.num_layers == 12 and built.lora is None
    assert built.trainable_parameters == built.total_parameters
    attn = built.base.model.text_model.layers[0].self_attn
    assert set(attn.image_proj) == {"understanding", "generation"}
    run = load_config(config, [f"run.out_dir={tmp_path / 'run'}"])
    with pytest.raises(
        TokredError, match="no image tokenizer / vocabulary registered for model type 'emu3'"
    ):
        train(run)


def test_missing_model_path_is_one_clear_error(tmp_path):
    config = load_config(shipped_configs()["emu3-full"], [f"model.path={tmp_path / 'nope'}"])
    with pytest.raises(TokredError, match="config.json not found"):
        build_model(config)

"""Decoder shapes: presets, validation, Hugging Face configs, load_shape."""

import json

import pytest
from tokred_core import PRESETS, DecoderShape, TokredError, load_shape

LLAMA_32_3B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "model_type": "llama",
}


def test_presets():
    v = PRESETS["vila-u-7b"]
    assert (v.hidden_size, v.intermediate_size, v.num_layers, v.num_heads, v.num_kv_heads) == (
        4096,
        11008,
        32,
        32,
        32,
    )
    assert v.head_dim == 128 and v.gated_ffn
    s = PRESETS["llama-3.2-3b"]
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim) == (
        3072,
        28,
        24,
        8,
        128,
    )
    assert s.q_width == 3072 and s.kv_width == 1024
    assert {"llama-3.2-1b", "tiny"} <= set(PRESETS)


def test_head_dim_default_and_explicit():
    assert DecoderShape(64, 128, 2, 4, 2).head_dim == 16
    # head_dim need not divide hidden_size when given (e.g. Gemma-style shapes).
    assert DecoderShape(100, 128, 2, 4, 2, head_dim=32).q_width == 128


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_size": 0}, "hidden_size=0 must be a positive integer"),
        ({"num_layers": -1}, "num_layers=-1 must be a positive integer"),
        ({"intermediate_size": 2.5}, "intermediate_size=2.5"),
        ({"num_layers": True}, "num_layers=True"),
        ({"num_kv_heads": 3}, "num_heads=4 is not divisible by num_kv_heads=3"),
        ({"hidden_size": 66}, "hidden_size=66 is not divisible by num_heads=4"),
        ({"head_dim": 0}, "head_dim=0"),
        ({"gated_ffn": "yes"}, "gated_ffn='yes'"),
        ({"vocab_size": 0}, "vocab_size=0"),
    ],
)
def test_validation(kwargs, match):
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
    }
    with pytest.raises(TokredError, match=match):
        DecoderShape(**{**base, **kwargs})


def test_from_hf_config_llama():
    assert DecoderShape.from_hf_config(LLAMA_32_3B) == PRESETS["llama-3.2-3b"]


def test_from_hf_config_defaults_kv_heads_and_null_head_dim():
    cfg = {**LLAMA_32_3B, "head_dim": None}
    del cfg["num_key_value_heads"]
    shape = DecoderShape.from_hf_config(cfg)
    assert shape.num_kv_heads == 24 and shape.head_dim == 128


@pytest.mark.parametrize("key", ["language_config", "text_config", "llm_config"])
def test_from_hf_config_nested_text_config(key):
    # Janus nests the LLaMA decoder under language_config, LLaVA-style models under
    # text_config; the top level describes the whole multimodal model.
    cfg = {"model_type": "multi_modality", "vision_config": {"hidden_size": 1024}, key: LLAMA_32_3B}
    assert DecoderShape.from_hf_config(cfg) == PRESETS["llama-3.2-3b"]


def test_from_hf_config_missing_keys_one_line():
    cfg = {"hidden_size": 64, "num_hidden_layers": 2}
    with pytest.raises(TokredError) as err:
        DecoderShape.from_hf_config(cfg, source="x/config.json")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("x/config.json: missing 'intermediate_size', 'num_attention_heads'")


def test_from_hf_config_bad_values_name_the_source():
    with pytest.raises(TokredError, match="cfg: num_heads=24 is not divisible by num_kv_heads=7"):
        DecoderShape.from_hf_config({**LLAMA_32_3B, "num_key_value_heads": 7}, source="cfg")
    with pytest.raises(TokredError, match="expected a JSON object"):
        DecoderShape.from_hf_config([1, 2])


def test_load_shape_preset_file_and_directory(tmp_path):
    assert load_shape("vila-u-7b") is PRESETS["vila-u-7b"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_32_3B))
    assert load_shape(str(path)) == PRESETS["llama-3.2-3b"]
    assert load_shape(tmp_path) == PRESETS["llama-3.2-3b"]


def test_load_shape_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(TokredError, match="neither a preset .* nor an existing file") as err:
        load_shape(str(missing))
    assert str(missing) in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokredError, match="is not valid JSON") as err:
        load_shape(str(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(TokredError, match="partial.json: missing"):
        load_shape(str(partial))

"""Bad input raises TokredError with a message naming the problem, before any compute."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as hf
from tokred_core import TaskPolicies, TokenLayout, TokredError
from tokred_core.policies import FastV, HiMix
from tokred_models import apply_reduction, supported_model_types
from tokred_models.testing import build_llama, mixed_layout, random_ids, run

LAYERS = 4


@pytest.fixture
def model():
    return build_llama(LAYERS)


def test_layout_length_differs_from_the_sequence(model):
    layout = mixed_layout()
    ids = random_ids(layout)
    longer = mixed_layout(length=layout.seq_len + 3)
    with apply_reduction(model, "none"):
        with pytest.raises(
            TokredError, match=rf"layout length {layout.seq_len + 3} differs .* {layout.seq_len}"
        ):
            model(input_ids=ids, tokred_layout=longer)
        # Also when the attention mask (which matches the ids) is given.
        with pytest.raises(TokredError, match="layout length"):
            model(input_ids=ids, attention_mask=layout.valid_mask().long(), tokred_layout=longer)
        with pytest.raises(TokredError, match="layout batch size 3 differs"):
            model(input_ids=ids, tokred_layout=layout.select(torch.tensor([0, 1, 2])))


def test_fastv_layer_past_the_last_layer(model):
    layout = mixed_layout()
    with apply_reduction(model, {"understanding": FastV(layer=LAYERS)}):
        with pytest.raises(
            TokredError, match=rf"fastv layer={LAYERS} is out of range.*{LAYERS} layers"
        ):
            run(model, random_ids(layout), layout)


def test_himix_on_an_understanding_sample_without_image_tokens(model):
    layout = TokenLayout.from_spans(
        [[("system", 2), ("image", 3), ("instruction", 2)], [("system", 2), ("instruction", 4)]],
        ["understanding", "understanding"],
    )
    with apply_reduction(model, TaskPolicies({"understanding": HiMix()})):
        with pytest.raises(TokredError, match="'himix' needs image tokens but sample .* has none"):
            run(model, random_ids(layout), layout)


def test_unsupported_model_lists_the_supported_types():
    config = hf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpt2 = hf.GPT2LMHeadModel(config)
    with pytest.raises(TokredError, match="unsupported model type 'gpt2'") as info:
        apply_reduction(gpt2, "none")
    message = str(info.value)
    for model_type in ("llama", "qwen2", "mistral", "chameleon", "emu3", "janus"):
        assert model_type in supported_model_types()
        assert model_type in message
    assert not hasattr(gpt2, "_tokred_handle")


def test_patching_twice(model):
    handle = apply_reduction(model, "none")
    with pytest.raises(TokredError, match="already patched"):
        apply_reduction(model, "himix", "modality")
    # The failed second patch left the first one intact and working.
    layout = mixed_layout()
    assert not hasattr(model.model.layers[0].self_attn, "image_proj")
    assert run(model, random_ids(layout), layout).shape[:2] == layout.segments.shape
    handle.undo()
    apply_reduction(model, {"understanding": "himix"}, "modality").undo()  # works after undo


def test_attention_mask_disagreeing_with_the_layout(model):
    layout = mixed_layout()
    ids = random_ids(layout)
    mask = layout.valid_mask().long()
    mask[0, -1] = 0  # sample 0 is the longest: its last token is real in the layout
    with apply_reduction(model, "none"):
        with pytest.raises(TokredError, match="attention_mask and tokred_layout disagree"):
            model(input_ids=ids, attention_mask=mask, tokred_layout=layout)


def test_layout_of_the_wrong_type(model):
    layout = mixed_layout()
    with apply_reduction(model, "none"):
        with pytest.raises(TokredError, match="tokred_layout must be a TokenLayout"):
            model(input_ids=random_ids(layout), tokred_layout=layout.segments)


def test_unknown_sharing_mode(model):
    with pytest.raises(TokredError, match="unknown projection sharing 'per_layer'"):
        apply_reduction(model, "none", "per_layer")
    assert not hasattr(model, "_tokred_handle")

"""Finding the reduction-patched model: itself, inside its peft wrapper, or a clear error."""

from __future__ import annotations

import pytest
from tokred_core import TaskPolicies, TokredError
from tokred_models import apply_reduction, patched_model, reduction_handle
from tokred_models.testing import build_llama


def test_patched_model_is_the_model_itself_or_the_one_inside_peft():
    from peft import LoraConfig, get_peft_model

    model = build_llama(layers=2)
    with pytest.raises(TokredError, match="not reduction-patched"):
        patched_model(model)
    handle = apply_reduction(model, TaskPolicies({"understanding": "himix"}), "task")
    assert patched_model(model) is model
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert patched_model(wrapped) is model
    assert reduction_handle(wrapped) is handle  # peft forwards the attribute read

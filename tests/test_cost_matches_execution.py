"""The cost model prices what the reduced model really computes.

Forward hooks count the rows each projection and FFN of a real (tiny) Llama receives under
a plan; the cost model's per-layer query and key/value token counts must equal them. This
ties tokred-core's FLOPs to tokred-models' execution: a saving the cost model reports is a
saving the model makes.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from tokred_core import TaskPolicies, TokenLayout, build_policy
from tokred_core.cost import plan_cost
from tokred_core.shapes import DecoderShape
from tokred_models import apply_reduction
from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model

LAYERS = 6
CONFIG = TinyUnifiedConfig(
    vocab_size=80,
    hidden_size=32,
    intermediate_size=48,
    num_layers=LAYERS,
    num_heads=4,
    num_kv_heads=2,
)
SHAPE = DecoderShape(
    hidden_size=32, intermediate_size=48, num_layers=LAYERS, num_heads=4, num_kv_heads=2
)

POLICIES = {
    "none": {},
    "himix": {"understanding": "himix"},
    "hmgen": {"generation": build_policy("hmgen", num_shallow=2)},
    "fastv": {"understanding": build_policy("fastv", layer=2, keep_ratio=0.3)},
    "pyramid_drop": {"understanding": build_policy("pyramid_drop", keep_ratio=0.5)},
    "random_drop": {"understanding": build_policy("random_drop", layer=1, keep_ratio=0.25)},
    "joint": {"understanding": "himix", "generation": build_policy("hmgen", num_shallow=2)},
}


def layout() -> TokenLayout:
    return TokenLayout.from_spans(
        [
            [("system", 3), ("image", 16), ("instruction", 5), ("output", 4)],
            [("system", 2), ("instruction", 6), ("output", 16)],
            [("system", 3), ("image", 9), ("instruction", 2), ("output", 1)],
        ],
        ["understanding", "generation", "understanding"],
    )


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("sharing", ["shared", "task"])
def test_rows_computed_per_layer_equal_the_cost_model_counts(name, sharing):
    model = build_tiny_unified_model(CONFIG).eval()
    lay = layout()
    ids = torch.randint(0, 80, lay.segments.shape, generator=torch.Generator().manual_seed(0))
    policies = TaskPolicies(POLICIES[name])
    handle = apply_reduction(model, policies, sharing)
    rows: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def counter(kind, layer):
        def hook(module, args, output):
            rows[kind][layer] += args[0].reshape(-1, args[0].shape[-1]).shape[0]

        return hook

    for idx, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        q_mods = [attn.q_proj] + [s.q_proj for s in getattr(attn, "image_proj", {}).values()]
        k_mods = [attn.k_proj] + [s.k_proj for s in getattr(attn, "image_proj", {}).values()]
        for m in q_mods:
            m.register_forward_hook(counter("q", idx))
        for m in k_mods:
            m.register_forward_hook(counter("kv", idx))
        layer.mlp.register_forward_hook(counter("ffn", idx))
    with torch.no_grad():
        model(ids, attention_mask=lay.valid_mask().long(), tokred_layout=lay)

    report = plan_cost(handle.plan(lay), SHAPE)
    for layer_cost in report.layers:
        i = layer_cost.layer
        assert rows["q"][i] == layer_cost.queries, (name, i)
        assert rows["ffn"][i] == layer_cost.queries, (name, i)
        assert rows["kv"][i] == layer_cost.kv_tokens, (name, i)
    handle.undo()
    if name != "none":
        assert (
            report.forward_flops < plan_cost(TaskPolicies().plan(lay, LAYERS), SHAPE).forward_flops
        )

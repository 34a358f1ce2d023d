"""The attention-allocation probe against eager attention weights aggregated by Eq. 2."""

from __future__ import annotations

import pytest
import torch
from tokred_core import Segment, Task, TokenLayout, TokredError
from tokred_models import apply_reduction
from tokred_models.probe import NUM_SEGMENTS, AttentionProbe
from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model


def tiny(layers: int = 3):
    return build_tiny_unified_model(
        TinyUnifiedConfig(
            vocab_size=64,
            hidden_size=48,
            intermediate_size=64,
            num_layers=layers,
            num_heads=6,
            num_kv_heads=2,
        )
    ).eval()


def mixed_layout() -> TokenLayout:
    return TokenLayout.from_spans(
        [
            [("system", 3), ("image", 7), ("instruction", 4), ("output", 3)],
            [("system", 2), ("instruction", 5), ("output", 9)],
            [("system", 1), ("image", 4), ("instruction", 2), ("output", 2)],
        ],
        ["understanding", "generation", "understanding"],
    )


def eager_mass(model, ids, layout) -> dict[Task, torch.Tensor]:
    """(L, H, Sq, Sk) mass per task from output_attentions of eager attention."""
    model.config._attn_implementation = "eager"
    try:
        attn = model(
            ids, attention_mask=layout.valid_mask().long(), output_attentions=True
        ).attentions
    finally:
        model.config._attn_implementation = "sdpa"
    seg = layout.segments
    valid = layout.valid_mask()
    onehot = torch.nn.functional.one_hot(seg.clamp(max=NUM_SEGMENTS - 1), NUM_SEGMENTS).double()
    onehot = onehot * valid[..., None]
    out = {}
    for task in Task:
        rows = layout.tasks == int(task)
        per_layer = []
        for a in attn:  # (B, H, N, N)
            a = a.double()[rows]
            oh = onehot[rows]
            # sum_i in Sq sum_j in Sk A[b,h,i,j]
            per_layer.append(torch.einsum("bhij,biq,bjk->hqk", a, oh, oh))
        out[task] = torch.stack(per_layer)
    return out


def test_probe_matches_eager_attention_on_a_mixed_padded_batch():
    torch.manual_seed(1)
    model = tiny()
    layout = mixed_layout()
    ids = torch.randint(0, 64, layout.segments.shape)
    with AttentionProbe(model) as probe:
        model(ids, attention_mask=layout.valid_mask().long(), tokred_layout=layout)
    result = probe.result()
    expected = eager_mass(model, ids, layout)
    for task in Task:
        torch.testing.assert_close(result.mass[task], expected[task], rtol=1e-4, atol=1e-5)
    assert result.num_samples == {Task.UNDERSTANDING: 2, Task.GENERATION: 1}
    shares = result.shares(Task.UNDERSTANDING)
    torch.testing.assert_close(shares.sum(-1), torch.ones(3, dtype=torch.float64))
    # The probe patched the model only for its duration.
    assert not hasattr(model.model.layers[0].self_attn, "image_proj")
    assert "forward" not in model.model.layers[0].__dict__


@pytest.mark.parametrize("chunk_size", [4, 64])
def test_probe_matches_eager_attention_on_an_unpadded_batch(chunk_size):
    # Every token of every sample is a query and a key in order: the probe passes no
    # positions and the kernel computes each chunk's causal key prefix only.
    torch.manual_seed(3)
    model = tiny()
    layout = TokenLayout.from_spans(
        [
            [("system", 3), ("image", 7), ("instruction", 4), ("output", 3)],
            [("system", 2), ("instruction", 6), ("output", 9)],
        ],
        ["understanding", "generation"],
    )
    assert bool(layout.valid_mask().all())
    ids = torch.randint(0, 64, layout.segments.shape)
    with AttentionProbe(model, chunk_size=chunk_size) as probe:
        model(ids, attention_mask=layout.valid_mask().long(), tokred_layout=layout)
    expected = eager_mass(model, ids, layout)
    for task in Task:
        torch.testing.assert_close(probe.result().mass[task], expected[task], rtol=1e-4, atol=1e-5)


def test_probe_sees_the_reduced_attention_under_himix():
    torch.manual_seed(2)
    model = tiny()
    layout = mixed_layout()
    ids = torch.randint(0, 64, layout.segments.shape)
    handle = apply_reduction(model, {"understanding": "himix"}, "modality")
    with AttentionProbe(model) as probe:
        model(ids, attention_mask=layout.valid_mask().long(), tokred_layout=layout)
    handle.undo()
    mass = probe.result().mass[Task.UNDERSTANDING]
    # Image tokens are not queries under HiMix, but still receive attention as keys.
    assert mass[:, :, Segment.IMAGE, :].abs().max() == 0
    assert mass[:, :, :, Segment.IMAGE].sum() > 0
    # Every remaining query row still sums to one per head: total mass = number of queries.
    queries = int(
        ((layout.segments != Segment.IMAGE) & layout.valid_mask())[layout.tasks == 0].sum()
    )
    torch.testing.assert_close(
        mass.sum((2, 3)), torch.full(mass.shape[:2], float(queries), dtype=torch.float64)
    )


def test_probe_without_a_layout_reports_a_clear_error():
    model = tiny(2)
    with AttentionProbe(model) as probe:
        model(torch.randint(0, 64, (1, 5)))
    with pytest.raises(TokredError, match="no forward pass with a tokred_layout"):
        probe.result()

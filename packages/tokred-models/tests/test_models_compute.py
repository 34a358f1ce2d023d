"""Reduction shrinks the matrices, not just the masks.

Forward hooks count the rows that reach the FFN, o_proj and each projection set per layer,
and the handle's probe sees the attention's query/key counts; all must equal the ACTIVE
(and INJECT) token counts that the policy implies, worked out here from the layout alone:
- batch: und (7 image tokens), gen (7 output image tokens), und (5), gen (4); 44 real tokens;
- himix: understanding image tokens are INJECT everywhere: 44 - 12 = 32 queries, and the
  image projection set also projects those 12 keys/values in every layer;
- hmgen (4 layers, one shallow layer: 1): all image tokens (24) BYPASS layer 1, whose text
  queries see only text keys;
- fastv (layer 2, keep 0.5): from layer 2 on ceil(7/2) + ceil(5/2) = 7 of 12 stay.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from tokred_models import apply_reduction
from tokred_models.testing import build_llama, mixed_layout, policy_cases, random_ids, run

LAYERS = 4
CASES = policy_cases(LAYERS)
VALID, UND_IMG, GEN_IMG = 44, 7 + 5, 7 + 4

# case -> per layer: (queries, keys, text q_proj rows, image-set k_proj rows)
EXPECTED = {
    # sharing "modality": the 23 image tokens use the image set even when nothing is reduced
    "none": ([VALID] * 4, [VALID] * 4, [VALID - 23] * 4, [23] * 4),
    "himix": (
        [VALID - UND_IMG] * 4,
        [VALID] * 4,
        [VALID - UND_IMG - GEN_IMG] * 4,
        [UND_IMG + GEN_IMG] * 4,  # 11 ACTIVE generation image rows + 12 INJECT rows
    ),
    "hmgen_alternate": (
        [VALID, VALID - 23, VALID, VALID],
        [VALID, VALID - 23, VALID, VALID],
        [VALID - 23] * 4,
        [23, 0, 23, 23],
    ),
    "fastv_last": (
        [VALID, VALID, VALID - 5, VALID - 5],
        [VALID, VALID, VALID - 5, VALID - 5],
        [VALID - 23] * 4,
        [23, 23, 18, 18],
    ),
    "himix_hmgen_task": (  # sharing "task": two image sets, counted together
        [VALID - UND_IMG, VALID - UND_IMG - GEN_IMG, VALID - UND_IMG, VALID - UND_IMG],
        [VALID, VALID - GEN_IMG, VALID, VALID],
        [VALID - 23] * 4,
        [23, 12, 23, 23],
    ),
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_rows_computed_per_layer_follow_the_plan(case):
    assert UND_IMG + GEN_IMG == 23
    policies, sharing = CASES[case] if case != "none" else (None, "modality")
    layout = mixed_layout()
    assert int(layout.valid_mask().sum()) == VALID
    ids = random_ids(layout)
    model = build_llama(LAYERS)
    rows: dict[str, list[int]] = defaultdict(lambda: [0] * LAYERS)
    hooks = []

    def counter(key, layer_idx):
        def hook(module, args, output):
            rows[key][layer_idx] += args[0].reshape(-1, args[0].shape[-1]).shape[0]

        return hook

    with apply_reduction(model, policies, sharing) as handle:
        attention = {}

        def probe(state, layer_idx, q, k, q_tok, k_tok, q_valid, k_valid, **kwargs):
            attention[layer_idx] = (int(q_valid.sum()), int(k_valid.sum()), q.shape[2], k.shape[2])

        handle.probe = probe
        for i, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            hooks.append(layer.mlp.register_forward_hook(counter("mlp", i)))
            hooks.append(attn.o_proj.register_forward_hook(counter("o_proj", i)))
            hooks.append(attn.q_proj.register_forward_hook(counter("q_text", i)))
            for group in attn.image_proj.values():
                hooks.append(group["k_proj"].register_forward_hook(counter("k_image", i)))
        run(model, ids, layout)
        for h in hooks:
            h.remove()

    queries, keys, q_text, k_image = EXPECTED[case]
    assert rows["mlp"] == queries
    assert rows["o_proj"] == queries
    assert [attention[i][0] for i in range(LAYERS)] == queries
    assert [attention[i][1] for i in range(LAYERS)] == keys
    assert rows["q_text"] == q_text
    assert rows["k_image"] == k_image
    # The padded attention batch is as long as the busiest sample, not the sequence.
    seq = layout.seq_len
    for i in range(LAYERS):
        assert attention[i][2] <= seq
    if case in ("himix", "fastv_last"):
        assert attention[LAYERS - 1][2] < seq


def test_the_unpatched_model_computes_every_position():
    layout = mixed_layout()
    model = build_llama(LAYERS)
    seen = []
    hook = model.model.layers[0].mlp.register_forward_hook(
        lambda m, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    run(model, random_ids(layout), attention_mask=layout.valid_mask().long())
    hook.remove()
    assert seen == [layout.batch_size * layout.seq_len]

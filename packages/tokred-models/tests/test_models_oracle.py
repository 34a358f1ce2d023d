"""The reduced layers against a slow oracle of the plan's semantics.

The oracle runs the Llama model's own weights (read from its modules) in float64, one
sample at a time, with full-length (N, N) masks and no gather/scatter:
- queries are the ACTIVE tokens; keys/values are ACTIVE + INJECT tokens; causal by index;
  padding is DROPPED by the plan, so never a key;
- INJECT keys/values come from the layer-0 embeddings through this layer's input norm and
  the projection set of the token's group (tokred_core.projection_groups);
- only ACTIVE hidden states are updated (attention + FFN); every other one is carried;
- a selection in layer l (FastV / PyramidDrop) averages the eager softmax probabilities of
  its ACTIVE selection queries over heads and queries, keeps ceil(ratio * n) of the ACTIVE
  candidates by score (ties to earlier positions) and DROPs the rest from layer l + 1 on.
The image projections are perturbed first, so that routing a token to the wrong set shows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tokred_core import ReductionPlan, Role, image_sets, layer_projection_sets, projection_groups
from tokred_models import apply_reduction
from tokred_models.testing import (
    build_llama,
    capture_states,
    mixed_layout,
    perturb_image_projections_,
    policy_cases,
    random_ids,
    rel_err,
    run,
)

LAYERS = 6
TOL = 2e-5  # float32 model against a float64 oracle (observed ~1.5e-6)
CASES = policy_cases(LAYERS)


def _lin(m, x):
    return F.linear(x, m.weight.double(), None if m.bias is None else m.bias.double())


def _rms(norm, x):
    return (
        norm.weight.double()
        * x
        * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    )


def _mlp(mlp, x):
    return _lin(mlp.down_proj, F.silu(_lin(mlp.gate_proj, x)) * _lin(mlp.up_proj, x))


def _proj(attn, name, sets, groups, x):
    """Each row of x (N, d) through the projection of its group (0 = text)."""
    modules = [getattr(attn, name)] + [attn.image_proj[s][name] for s in sets]
    every = torch.stack([_lin(m, x) for m in modules])  # (G, N, out)
    return every[groups, torch.arange(x.shape[0])]


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


@torch.no_grad()
def oracle_logits(model, plan: ReductionPlan, layout, sharing, ids, layer_sets=None):
    """(B, N, V) float64 logits and the (L, B, N) roles after the selections.
    layer_sets: per layer, the image set of each projection group (default: the
    sharing's sets in every layer; `aligned` sharing varies them by layer)."""
    dec = model.model
    cfg = dec.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    dim = cfg.hidden_size // heads
    b_size, n = ids.shape
    roles = plan.roles.clone().long()
    groups = projection_groups(layout, sharing)
    if layer_sets is None:
        layer_sets = [image_sets(sharing)] * len(dec.layers)
    x0 = dec.embed_tokens.weight.double()[ids]
    h = x0.clone()
    angles = layout.position_ids().double()[..., None] * dec.rotary_emb.inv_freq.double()
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    idx = torch.arange(n)
    causal = idx[None, :] <= idx[:, None]
    for li, layer in enumerate(dec.layers):
        attn = layer.self_attn
        sets = layer_sets[li]
        new_h = h.clone()
        for b in range(b_size):
            active = roles[li, b] == Role.ACTIVE
            inject = roles[li, b] == Role.INJECT
            hn = _rms(layer.input_layernorm, h[b])
            kv_in = torch.where(inject[:, None], _rms(layer.input_layernorm, x0[b]), hn)
            q = _proj(attn, "q_proj", sets, groups[b], hn).view(n, heads, dim)
            k = _proj(attn, "k_proj", sets, groups[b], kv_in).view(n, kv_heads, dim)
            v = _proj(attn, "v_proj", sets, groups[b], kv_in).view(n, kv_heads, dim)
            q, k = _rope(q, cos[b], sin[b]), _rope(k, cos[b], sin[b])
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
            visible = active[:, None] & (active | inject)[None, :] & causal
            scores = torch.einsum("ihd,jhd->hij", q, k) * attn.scaling
            probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), -1).nan_to_num(0.0)
            o = torch.einsum("hij,jhd->ihd", probs, v).reshape(n, heads * dim)
            x1 = h[b] + _lin(attn.o_proj, o)
            x2 = x1 + _mlp(layer.mlp, _rms(layer.post_attention_layernorm, x1))
            new_h[b, active] = x2[active]
            for sel in plan.selections_at(li):
                queries = sel.queries[b] & active
                cand = sel.candidates[b] & active
                if not queries.any() or not cand.any():
                    continue
                score = probs[:, queries].mean(dim=(0, 1))
                keep = math.ceil(sel.keep_ratio * int(cand.sum()) - 1e-9)
                ranked = sorted(
                    torch.nonzero(cand).flatten().tolist(), key=lambda j: (-score[j], j)
                )
                dropped = cand.clone()
                dropped[ranked[:keep]] = False
                roles[li + 1 :, b, dropped] = int(Role.DROPPED)
        h = new_h
    return _rms(dec.norm, h) @ model.lm_head.weight.double().T, roles


@pytest.fixture(scope="module")
def llama6():
    return build_llama(LAYERS, seed=11)


def test_oracle_of_the_full_plan_is_the_unpatched_model(llama6):
    layout = mixed_layout()
    ids = random_ids(layout, seed=5)
    plan = ReductionPlan.full(LAYERS, layout.batch_size, layout.seq_len)
    plan.roles.masked_fill_(~layout.valid_mask()[None], int(Role.DROPPED))
    expected, _ = oracle_logits(llama6, plan, layout, "shared", ids)
    got = run(llama6, ids, attention_mask=layout.valid_mask().long())
    assert rel_err(got, expected, layout.valid_mask()) <= TOL


@pytest.mark.parametrize("case", list(CASES))
def test_reduced_model_matches_the_oracle(llama6, case):
    policies, sharing = CASES[case]
    layout = mixed_layout()
    ids = random_ids(layout, seed=5)
    valid = layout.valid_mask()
    with apply_reduction(llama6, policies, sharing) as handle:
        if image_sets(sharing):
            assert perturb_image_projections_(llama6) > 0
        states = capture_states(handle)
        got = run(llama6, ids, layout)
        plan = handle.plan(layout)
        layer_sets = layer_projection_sets(sharing, policies, LAYERS)
        expected, roles = oracle_logits(llama6, plan, layout, sharing, ids, layer_sets)
        assert len(states) == 1
        executed = states[0].plan.roles.long()
        assert torch.equal(executed, roles), f"{case}: the executed plan differs from the oracle's"
        err = rel_err(got, expected, valid)
        assert err <= TOL, f"{case}: rel err {err:.2e} against the oracle"

        # The case must matter: the same weights with every real token ACTIVE differ.
        full = ReductionPlan.full(LAYERS, layout.batch_size, layout.seq_len)
        full.roles.masked_fill_(~valid[None], int(Role.DROPPED))
        unreduced, _ = oracle_logits(llama6, full, layout, sharing, ids, layer_sets)
        assert rel_err(unreduced, expected, valid) > 1e-2, f"{case}: policy changed nothing"
        if plan.selections:
            # Selections dropped tokens somewhere.
            assert bool((roles == Role.DROPPED).sum() > (plan.roles.long() == Role.DROPPED).sum())

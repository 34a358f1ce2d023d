"""The layer's key block (layer_keys.py) equals the key parts padded one by one and put
side by side, on random ragged selections: samples without INJECT tokens, a batch
without any, odd sizes; and its gradient reaches every stacked row."""

from __future__ import annotations

import pytest
import torch
from tokred_core import Role
from tokred_kernels import pack_to_padded
from tokred_models.layer_keys import LayerKeys, key_layout
from tokred_models.schedule import StepSchedule


def _schedule(gen, bsz, seq, with_inject):
    roles = torch.full((1, bsz, seq), int(Role.BYPASS), dtype=torch.long)
    draw = torch.rand(bsz, seq, generator=gen)
    roles[0][draw < 0.6] = int(Role.ACTIVE)
    if with_inject:
        roles[0][(draw >= 0.6) & (draw < 0.85)] = int(Role.INJECT)
        roles[0, 0][roles[0, 0] == int(Role.INJECT)] = int(Role.BYPASS)  # a sample without
    roles[0, :, 0] = int(Role.ACTIVE)  # every sample keeps a query
    groups = torch.randint(0, 3, (bsz, seq), generator=gen)
    return StepSchedule(roles, groups, 3, torch.device("cpu")).pattern(0)


@pytest.mark.parametrize("with_inject", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_key_block_equals_the_parts_padded_side_by_side(seed, with_inject):
    gen = torch.Generator().manual_seed(seed)
    bsz, seq, kv_heads, dim = 3 + seed, 11 + 2 * seed, 2, 3
    pattern = _schedule(gen, bsz, seq, with_inject)
    sets = pattern.key_sets
    assert len(sets) == (2 if with_inject else 1)
    rows = [torch.randn(s.total, kv_heads, dim, generator=gen) for s in sets]
    k = torch.cat(rows).requires_grad_(True)
    v = torch.cat(rows).flip(-1).requires_grad_(True)
    keys = LayerKeys(k, v, pattern, seq)
    want_k = torch.cat([pack_to_padded(r, s.index) for r, s in zip(rows, sets, strict=True)], dim=1)
    torch.testing.assert_close(keys.k.transpose(1, 2), want_k)
    tokens = torch.cat([s.index.padded_indices % seq for s in sets], dim=1)
    valid = torch.cat([s.index.padded_valid for s in sets], dim=1)
    assert torch.equal(keys.layout.tokens, tokens) and torch.equal(keys.layout.valid, valid)
    # The parts are views of the block, in order, with their own tokens and validity.
    for part, s, r in zip(keys.parts(), sets, rows, strict=True):
        torch.testing.assert_close(part.k.transpose(1, 2), pack_to_padded(r, s.index))
        assert torch.equal(part.valid, s.index.padded_valid)
    # The gradient reaches every stacked row as through the parts padded one by one.
    weight = torch.randn(keys.k.shape, generator=gen)
    (gk,) = torch.autograd.grad((keys.k * weight).sum(), k)
    ref_rows = [r.clone().requires_grad_(True) for r in rows]
    ref = torch.cat(
        [pack_to_padded(r, s.index) for r, s in zip(ref_rows, sets, strict=True)], dim=1
    )
    want = torch.autograd.grad((ref * weight.transpose(1, 2)).sum(), ref_rows)
    torch.testing.assert_close(gk, torch.cat(want))
    assert float(keys.k.transpose(1, 2)[~keys.layout.valid].abs().sum()) == 0.0
    assert key_layout(pattern, seq) is keys.layout  # built once per pattern

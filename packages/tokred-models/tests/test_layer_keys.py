"""The layer's key block (layer_keys.py) equals, row by row, each sample's ACTIVE keys
and then its INJECT keys packed one after the other, on random ragged selections:
samples without INJECT tokens, a batch without any, odd sizes; and its gradient reaches
every stacked row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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


def _per_sample(rows, sets, seq):
    """The reference block, sample by sample: each set's rows of the sample, in order,
    then zero padding; with their tokens and validity."""
    parts = [pack_to_padded(r, s.index) for r, s in zip(rows, sets, strict=True)]
    tokens = [s.index.padded_indices % seq for s in sets]
    blocks, toks = [], []
    for b in range(parts[0].shape[0]):
        blocks.append(torch.cat([p[b, : s.counts[b]] for p, s in zip(parts, sets, strict=True)]))
        toks.append(torch.cat([t[b, : s.counts[b]] for t, s in zip(tokens, sets, strict=True)]))
    width = max(len(t) for t in toks)
    block = torch.stack([F.pad(x, (0, 0, 0, 0, 0, width - len(x))) for x in blocks])
    tok = torch.stack([F.pad(t, (0, width - len(t))) for t in toks])
    valid = torch.arange(width)[None] < torch.tensor([len(t) for t in toks])[:, None]
    return block, tok, valid


@pytest.mark.parametrize("with_inject", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_key_block_packs_each_samples_inject_keys_after_its_active_ones(seed, with_inject):
    gen = torch.Generator().manual_seed(seed)
    bsz, seq, kv_heads, dim = 3 + seed, 11 + 2 * seed, 2, 3
    pattern = _schedule(gen, bsz, seq, with_inject)
    sets = pattern.key_sets
    assert len(sets) == (2 if with_inject else 1)
    rows = [torch.randn(s.total, kv_heads, dim, generator=gen) for s in sets]
    k = torch.cat(rows).requires_grad_(True)
    v = torch.cat(rows).flip(-1).requires_grad_(True)
    keys = LayerKeys(k, v, pattern, seq)
    want_k, tokens, valid = _per_sample(rows, sets, seq)
    torch.testing.assert_close(keys.k.transpose(1, 2), want_k)
    assert torch.equal(keys.layout.tokens, tokens) and torch.equal(keys.layout.valid, valid)
    # What causal buckets rely on (bucketed_attention.py): a sample's keys begin with its
    # queries' own tokens, in the queries' slots.
    queries = sets[0].index.padded_valid
    lead = keys.layout.tokens[:, : queries.shape[1]]
    assert torch.equal(lead[queries], keys.query_tokens[queries])
    assert torch.equal(keys.query_tokens, sets[0].index.padded_indices % seq)
    if with_inject:  # no wider than the longest sample, never the two maxima side by side
        longest = max(a + i for a, i in zip(sets[0].counts, sets[1].counts, strict=True))
        assert keys.layout.width == longest
    # The gradient reaches every stacked row as through the reference packing.
    weight = torch.randn(keys.k.shape, generator=gen)
    (gk,) = torch.autograd.grad((keys.k * weight).sum(), k)
    ref_rows = [r.clone().requires_grad_(True) for r in rows]
    ref, _, _ = _per_sample(ref_rows, sets, seq)
    want = torch.autograd.grad((ref * weight.transpose(1, 2)).sum(), ref_rows)
    torch.testing.assert_close(gk, torch.cat(want))
    assert float(keys.k.transpose(1, 2)[~keys.layout.valid].abs().sum()) == 0.0
    assert key_layout(pattern, seq) is keys.layout  # built once per pattern

"""stacked_projection against a per-row reference: several row sets, stacked, share one
call per projection set, on random inputs with empty groups and empty sets."""

from __future__ import annotations

import pytest
import torch
from tokred_models.projections import stacked_projection


def _reference(modules, groups_per_set, rows_per_set):
    """Each row through its group's module, one at a time."""
    outs = []
    for groups, rows in zip(groups_per_set, rows_per_set, strict=True):
        out = [modules[g](r) for g, r in zip(groups, rows, strict=True)]
        outs.append(torch.stack(out) if out else rows.new_zeros(0, modules[0].out_features))
    return outs


def _sorted_groups(gen, n, num_groups, allowed):
    """n group ids from `allowed`, in group order (the schedule orders packed rows so)."""
    if not allowed:
        return []
    pick = torch.randint(len(allowed), (n,), generator=gen).tolist()
    return sorted(allowed[i] for i in pick)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_sets", [1, 2, 3])
def test_stacked_projection_matches_per_row_reference_values_and_gradients(seed, num_sets):
    gen = torch.Generator().manual_seed(seed)
    num_groups = int(torch.randint(1, 4, (1,), generator=gen))
    modules = [torch.nn.Linear(5, 3) for _ in range(num_groups)]
    groups, rows = [], []
    for _ in range(num_sets):
        n = int(torch.randint(0, 9, (1,), generator=gen))  # 0: an empty set
        # Some groups absent from this set, some from every set.
        allowed = [g for g in range(num_groups) if torch.rand(1, generator=gen) < 0.6]
        g = _sorted_groups(gen, n, num_groups, allowed)
        groups.append(g)
        rows.append(torch.randn(len(g), 5, generator=gen, requires_grad=True))
    counts = [[g.count(k) for k in range(num_groups)] for g in groups]
    outs = stacked_projection(torch.cat(rows), counts, modules).split([len(g) for g in groups])
    ref_rows = [r.detach().clone().requires_grad_(True) for r in rows]
    refs = _reference(modules, groups, ref_rows)
    weights = [torch.randn(o.shape, generator=gen) for o in refs]
    for out, ref in zip(outs, refs, strict=True):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(outs, weights, strict=True)),
        [*rows, *(m.weight for m in modules)],
        allow_unused=False,  # every module is in the graph, even with no rows anywhere
    )
    ref_loss = sum((o * w).sum() for o, w in zip(refs, weights, strict=True))
    used = [m.weight for m in modules]
    if torch.is_tensor(ref_loss) and ref_loss.requires_grad:
        ref_grads = torch.autograd.grad(ref_loss, [*ref_rows, *used], allow_unused=True)
    else:  # no row anywhere: every gradient is zero
        ref_grads = [None] * (len(ref_rows) + len(used))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want)


def test_stacked_projection_rejects_counts_that_do_not_split_its_rows():
    modules = [torch.nn.Linear(4, 2) for _ in range(2)]
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"group_counts \[\[2, 2\]\] do not split 5 rows"):
        stacked_projection(x, [[2, 2]], modules)
    with pytest.raises(ValueError, match=r"group_counts \[5\] name 1 groups for 2 sets"):
        stacked_projection(x, [[5]], modules)

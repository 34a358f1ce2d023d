"""Causality and padding invariance of the reduced model under every policy.

Causality: the logits at positions <= t may not depend on tokens after t. For the static
policies this holds for every t. FastV and PyramidDrop choose which image tokens to drop
from the attention of prompt queries (system / instruction), which see every token up to
the last prompt token; the choice then applies to earlier image tokens too. So for them the
guarantee starts at t = the last prompt token: changing anything after it cannot change the
choice, and every loss position (the output) is after it.

Padding: a sample's logits do not depend on the other samples of the batch or on padding,
on either side (left padding needs position_ids = layout.position_ids(), as in any HF
model). random_drop is left out of this one: its draw is seeded per call over the whole
(B, N) batch, so a sample's drop legitimately depends on the batch it is drawn in.
"""

from __future__ import annotations

import pytest
import torch
from tokred_core import Segment, Task, TokenLayout
from tokred_models import apply_reduction
from tokred_models.testing import (
    MIXED_SPANS,
    MIXED_TASKS,
    TEXT_TOKENS,
    build_llama,
    mixed_layout,
    policy_cases,
    random_ids,
    rel_err,
    run,
)

LAYERS = 4
CASES = policy_cases(LAYERS)
SELECTING = {"fastv_last", "fastv_prompt", "pyramid_drop"}
TOL = 1e-6


@pytest.fixture(scope="module")
def llama4():
    return build_llama(LAYERS, seed=21)


def _change_after(
    ids: torch.Tensor, layout: TokenLayout, t: torch.Tensor, seed: int
) -> torch.Tensor:
    """ids with every real token after position t[b] replaced by a different token."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, TEXT_TOKENS[1] - TEXT_TOKENS[0], ids.shape, generator=g)
    new = TEXT_TOKENS[0] + (ids - TEXT_TOKENS[0] + shift) % (TEXT_TOKENS[1] - TEXT_TOKENS[0])
    after = (torch.arange(ids.shape[1])[None, :] > t[:, None]) & layout.valid_mask()
    assert bool((new != ids)[after].all())
    return torch.where(after, new, ids)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_up_to_t_ignore_later_tokens(llama4, case):
    policies, sharing = CASES[case]
    layout = mixed_layout()
    ids = random_ids(layout, seed=8)
    lengths = layout.valid_mask().sum(-1)
    # Selection policies only serve understanding rows; generation rows run unreduced.
    first = torch.zeros_like(lengths)
    if case in SELECTING:
        und = layout.tasks == Task.UNDERSTANDING
        first = torch.where(und, layout.last_prompt_index(), first)
    with apply_reduction(llama4, policies, sharing):
        base = run(llama4, ids, layout).detach()
        for step, frac in enumerate((0.0, 0.5, 1.0)):
            # t from `first` to the second-to-last real token of each sample.
            t = first + ((lengths - 2 - first).clamp(min=0).double() * frac).long()
            changed = _change_after(ids, layout, t, seed=step)
            out = run(llama4, changed, layout).detach()
            upto = torch.arange(layout.seq_len)[None, :] <= t[:, None]
            err = rel_err(out, base, upto)
            assert err <= TOL, f"{case}: logits at <= t moved by {err:.2e} (t={t.tolist()})"
            later = ~upto & layout.valid_mask()
            assert rel_err(out, base, later) > 1e-3, "the change after t must show after t"


def _sample_layout(b: int, length: int | None = None, side: str = "right") -> TokenLayout:
    return TokenLayout.from_spans(
        [MIXED_SPANS[b]], [MIXED_TASKS[b]], length=length, padding_side=side
    )


@pytest.mark.parametrize("case", [c for c in CASES if c != "random_drop"])
def test_a_sample_is_the_same_alone_and_in_a_padded_batch(llama4, case):
    policies, sharing = CASES[case]
    right = mixed_layout("right", length=17)
    left = mixed_layout("left", length=17)
    ids_r = random_ids(right, seed=9)
    with apply_reduction(llama4, policies, sharing):
        out_r = run(llama4, ids_r, right)
        # Same tokens, moved to the right end of each row.
        valid_r, valid_l = right.valid_mask(), left.valid_mask()
        ids_l = torch.zeros_like(ids_r)
        ids_l[valid_l] = ids_r[valid_r]
        out_l = run(llama4, ids_l, left, position_ids=left.position_ids())
        for b in range(right.batch_size):
            alone_layout = _sample_layout(b)
            alone_ids = ids_r[b : b + 1, valid_r[b]]
            alone = run(llama4, alone_ids, alone_layout)[0]
            err_r = rel_err(out_r[b, valid_r[b]], alone)
            err_l = rel_err(out_l[b, valid_l[b]], alone)
            assert err_r <= 1e-5, f"{case}: sample {b} right-padded differs by {err_r:.2e}"
            assert err_l <= 1e-5, f"{case}: sample {b} left-padded differs by {err_l:.2e}"


@pytest.mark.parametrize("case", sorted(SELECTING))
def test_selection_before_the_last_prompt_token_is_not_causal(llama4, case):
    """The documented limit is real: a prompt token changes which earlier image tokens stay."""
    policies, sharing = CASES[case]
    layout = mixed_layout()
    ids = random_ids(layout, seed=8)
    und = layout.tasks == Task.UNDERSTANDING
    # t = the last image token of understanding rows (the instruction after it changes);
    # generation rows unchanged.
    pos = torch.arange(layout.seq_len).expand_as(layout.segments)
    last_image = torch.where(layout.segments == Segment.IMAGE, pos, -1).max(-1).values
    t = torch.where(und, last_image, layout.valid_mask().sum(-1))
    with apply_reduction(llama4, policies, sharing):
        base = run(llama4, ids, layout).detach()
        out = run(llama4, _change_after(ids, layout, t, seed=0), layout).detach()
    upto = (torch.arange(layout.seq_len)[None, :] <= t[:, None]) & und[:, None]
    assert rel_err(out, base, upto) > 1e-3

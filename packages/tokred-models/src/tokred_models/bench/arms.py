"""The ways of executing one reduction plan that `tokred bench` times against each other.

Each arm takes a model and a batch and runs forward + backward of the LM loss on the
batch's targets (the output segment of either task), as a training step does.

none               the plain Hugging Face model: the baseline every arm is timed against.
tokred             `apply_reduction` + `tokred_layout`: the plan as tokred executes it
                   (gathered ACTIVE tokens, INJECT keys/values from layer-0 embeddings,
                   bucketed attention, attention-scored selections).
masking-only       the plain model under one 4D additive attention mask that hides the
                   tokens the plan removes, the way FastV's training path and VoCo-LLaMA
                   apply their reduction: by masking, with every token still computed, so
                   nothing is saved. Hugging Face takes one mask for all layers, so the
                   hidden keys are those the plan's LAST layer does not attend to (neither
                   ACTIVE nor INJECT there). Why the last layer: drops are final, so by then
                   every DROPPED token is gone, while BYPASS is temporary (HMGen's last
                   layer is full again) and INJECT tokens stay keys in every layer (HiMix
                   removes their queries and FFN, which a mask cannot express). So it
                   masks FastV's, PyramidDrop's and random drop's tokens from layer 0 on,
                   and for himix and hmgen it is the dense model under a 4D mask. Every
                   query keeps its own key, so no softmax row is empty.
renumbered-gather  the scheme of PyramidDrop's training code (Cooperx521/PyramidDrop,
                   `pdrop_rank_drop`): for each run of consecutive layers with the same
                   ACTIVE set, the ACTIVE tokens are gathered into a re-padded batch with
                   positions renumbered 0..n-1, the Hugging Face decoder layers run on it
                   (RoPE of the renumbered positions, a causal + padding 4D mask), and the
                   results are scattered back into the full-length stream between runs
                   (PyramidDrop never scatters back: its drops are final; HMGen's BYPASS
                   tokens return). It computes ACTIVE tokens only: INJECT keys have no place
                   in it, so under himix text no longer sees the image.

masking-only and renumbered-gather need the roles before the forward; a dynamic selection
(fastv, pyramid_drop) keeps its earliest candidates there (`resolved_by_position`, the
cost model's convention), while tokred scores them by attention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tokred_core import ReductionPlan, Role, TaskPolicies, TokenLayout, TokredError
from tokred_core.cost import canonical_spans
from torch import nn

from .. import apply_reduction

__all__ = [
    "ARM_NAMES",
    "BenchBatch",
    "ArmStep",
    "make_batch",
    "static_plan",
    "plain_loss",
    "tokred_loss",
    "masking_loss",
    "renumbered_loss",
    "masking_attention_mask",
    "active_runs",
    "plain_step",
    "open_arm",
]

ARM_NAMES = ("tokred", "masking-only", "renumbered-gather")


@dataclass(frozen=True)
class BenchBatch:
    """Token ids, labels (-100 off the targets) and 2D mask on the model's device; the
    layout stays on the host, where plans are built."""

    ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    layout: TokenLayout

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.layout.valid_mask().sum())


ArmStep = Callable[[BenchBatch], torch.Tensor]
"""One forward + backward; returns the (detached) loss."""


def make_batch(
    tasks: Sequence[str], text_tokens: int, image_tokens: int, vocab_size: int, device, seed=1
) -> BenchBatch:
    """Canonical samples of `tasks` (one per sample) with random ids, seeded."""
    spans = [canonical_spans(t, text_tokens, image_tokens) for t in tasks]
    layout = TokenLayout.from_spans(spans, list(tasks))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, layout.segments.shape, generator=gen)
    labels = torch.where(layout.target_mask(), ids, torch.full_like(ids, -100))
    mask = layout.valid_mask().long()
    return BenchBatch(ids.to(device), labels.to(device), mask.to(device), layout)


def static_plan(policies: TaskPolicies, layout: TokenLayout, num_layers: int) -> ReductionPlan:
    """The plan with its selections and routes fixed before the forward (earliest
    candidates kept, as the cost model prices them)."""
    plan = policies.plan(layout, num_layers)
    return plan.resolved_by_position() if plan.selections or plan.routes else plan


def _lm_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # The model's own loss (shifted cross-entropy, mean over targets), so every arm's loss
    # is the number the plain model would report for the same logits.
    return model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size)


def plain_loss(model: nn.Module, batch: BenchBatch) -> torch.Tensor:
    return model(batch.ids, attention_mask=batch.attention_mask, labels=batch.labels).loss


def tokred_loss(model: nn.Module, batch: BenchBatch) -> torch.Tensor:
    """`model` already patched by `apply_reduction`."""
    return model(
        batch.ids,
        attention_mask=batch.attention_mask,
        labels=batch.labels,
        tokred_layout=batch.layout,
    ).loss


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The dtype's minimum rather than -inf: a row with nothing allowed (a padding slot)
    # then softmaxes to uniform instead of NaN, which would poison the backward.
    zeros = torch.zeros(allowed.shape, dtype=dtype)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def masking_attention_mask(
    plan: ReductionPlan, layout: TokenLayout, dtype: torch.dtype
) -> torch.Tensor:
    """(B, 1, N, N) additive mask: causal, and the keys the plan's last layer does not
    attend to (padding included) hidden from every query but themselves."""
    last = plan.roles[-1]
    visible = ((last == Role.ACTIVE) | (last == Role.INJECT)) & layout.valid_mask()
    n = layout.seq_len
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    allowed = causal[None] & (visible[:, None, :] | torch.eye(n, dtype=torch.bool)[None])
    return _additive(allowed, dtype)


def masking_loss(model: nn.Module, batch: BenchBatch, plan: ReductionPlan) -> torch.Tensor:
    mask = masking_attention_mask(plan, batch.layout, model.dtype).to(batch.ids.device)
    return model(batch.ids, attention_mask=mask, labels=batch.labels).loss


def active_runs(active: torch.Tensor) -> list[tuple[int, int]]:
    """[(start, stop)] of the runs of consecutive layers with equal (B, N) ACTIVE sets."""
    runs, start = [], 0
    for layer in range(1, active.shape[0]):
        if not torch.equal(active[layer], active[start]):
            runs.append((start, layer))
            start = layer
    runs.append((start, active.shape[0]))
    return runs


def _run_gathered(layers, rotary: nn.Module, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Run `layers` on the tokens of the (B, N) host mask `keep`, re-padded and renumbered;
    the others keep their hidden states."""
    b, n_full, d = h.shape
    counts = keep.sum(-1)
    n = int(counts.max())
    if n == 0:
        return h
    slots = torch.arange(n)[None] < counts[:, None]
    # Flat indices built on the host (the plan is there), so the device never syncs.
    src = torch.nonzero(keep.reshape(-1)).squeeze(1).to(h.device)
    dst = torch.nonzero(slots.reshape(-1)).squeeze(1).to(h.device)
    flat = h.reshape(b * n_full, d)
    x = flat.new_zeros(b * n, d).index_copy(0, dst, flat.index_select(0, src)).view(b, n, d)
    positions = torch.arange(n, device=h.device)[None]
    embeddings = rotary(x, positions)
    # Without padding the kernel's own causal path runs, as Hugging Face does it.
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = None if bool(slots.all()) else _additive(causal[None] & slots[:, None, :], x.dtype)
    mask = mask.to(h.device) if mask is not None else None
    for layer in layers:
        x = layer(x, attention_mask=mask, position_ids=positions, position_embeddings=embeddings)
    return flat.index_copy(0, src, x.reshape(b * n, d).index_select(0, dst)).view(b, n_full, d)


def renumbered_loss(model: nn.Module, batch: BenchBatch, plan: ReductionPlan) -> torch.Tensor:
    """The Llama stack (`model.model`: embed_tokens, layers, rotary_emb, norm) run by
    ACTIVE-set runs; the LM head and loss over the full-length stream."""
    inner = model.model
    h = inner.embed_tokens(batch.ids)
    active = plan.roles == Role.ACTIVE
    for start, stop in active_runs(active):
        h = _run_gathered(inner.layers[start:stop], inner.rotary_emb, h, active[start])
    return _lm_loss(model, model.lm_head(inner.norm(h)), batch.labels)


def _backward(loss: torch.Tensor) -> torch.Tensor:
    loss.backward()
    return loss.detach()


def plain_step(model: nn.Module) -> ArmStep:
    """The `none` baseline: the plain model's forward + backward."""
    return lambda batch: _backward(plain_loss(model, batch))


@contextmanager
def open_arm(
    name: str, model: nn.Module, policies: TaskPolicies, sharing: str = "shared"
) -> Iterator[ArmStep]:
    """The step of arm `name` on `model` for `policies`. tokred patches `model` for the
    duration (give it a model of its own); the others leave it as it is. Their plans are
    built inside the step, as tokred builds its plan inside its forward."""
    num_layers = model.config.num_hidden_layers
    if name == "tokred":
        handle = apply_reduction(model, policies, sharing)
        try:
            yield lambda batch: _backward(tokred_loss(model, batch))
        finally:
            handle.undo()
    elif name == "masking-only":
        yield lambda batch: _backward(
            masking_loss(model, batch, static_plan(policies, batch.layout, num_layers))
        )
    elif name == "renumbered-gather":
        yield lambda batch: _backward(
            renumbered_loss(model, batch, static_plan(policies, batch.layout, num_layers))
        )
    else:
        raise TokredError(f"unknown arm {name!r}: expected one of {', '.join(ARM_NAMES)}")

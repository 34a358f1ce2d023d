"""Analytic FLOPs of a reduction plan on a decoder shape.

Full count (forward, per layer, summed over the samples of the layout; 2 FLOPs per
multiply-add):

    queries  n_q  = ACTIVE tokens
    kv       n_kv = ACTIVE + INJECT tokens (INJECT keys/values are recomputed in every
                    layer from the layer-0 embeddings, so they pay the K/V projections
                    in every layer; BYPASS and DROPPED tokens cost nothing)
    q_proj     2 * d * H*hd           per query
    kv_proj    2 * 2 * d * KV*hd      per kv token (K and V, grouped-query widths)
    attention  4 * H * hd             per (query, key) pair: 2*hd for q.k, 2*hd for p.v
    o_proj     2 * H*hd * d           per query
    ffn        2 * d * ffn * (3 gated | 2 plain)  per query
    router     2 * d                  per candidate of a routed layer (the `router` policy's
                                      d -> 1 score; its layer is priced at capacity: the
                                      picked candidates ACTIVE, the rest BYPASS)

Pairs are counted `causal="exact"` (default: only causally visible pairs, key index <=
query index among the tokens that take part) or `causal="dense"` (every query x every kv
token, what a dense kernel without masking computes). Norms, RoPE, softmax, embeddings and
the lm_head are not counted. Training FLOPs are taken as 3x forward (backward ~ 2x).

Paper convention (PAPER.md sections 2-3), per layer and sample: n_q * n_kv * d + 8 * n_q * d^2,
in arbitrary units. It reproduces Cost_base, Cost_HiMix (ratio exactly T/(T+M)) and
Cost_HMGen, and leaves out what the full count adds (INJECT K/V projections, causality).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import TokredError
from .layout import Segment, Task, TokenLayout, parse_task
from .plans import ReductionPlan
from .policies import Policy, TaskPolicies, build_policy
from .roles import Role
from .shapes import DecoderShape

__all__ = [
    "CAUSAL_MODES",
    "TRAINING_FLOPS_FACTOR",
    "COMPONENTS",
    "LayerCost",
    "CostReport",
    "plan_cost",
    "policy_cost",
    "canonical_spans",
    "canonical_layout",
    "cost_notes",
]

CAUSAL_MODES = ("exact", "dense")
# Backward costs about twice the forward (grads w.r.t. activations and weights).
TRAINING_FLOPS_FACTOR = 3
COMPONENTS = ("q_proj", "kv_proj", "attention", "o_proj", "ffn", "router")
Causal = Literal["exact", "dense"]


@dataclass(frozen=True)
class LayerCost:
    """One layer's work, summed over the samples of a layout."""

    layer: int
    queries: int
    """ACTIVE tokens (they run Q, o_proj and the FFN)."""
    kv_tokens: int
    """ACTIVE + INJECT tokens (they run the K/V projections)."""
    attention_pairs: int
    """(query, key) pairs scored, per the causal convention."""
    q_proj: int
    kv_proj: int
    attention: int
    o_proj: int
    ffn: int
    paper_units: int
    """n_q * n_kv * d + 8 * n_q * d^2 summed over samples (the paper's convention)."""
    router: int = 0
    """The routers' scores in a routed layer (0 elsewhere); not in the paper convention."""

    @property
    def flops(self) -> int:
        return self.q_proj + self.kv_proj + self.attention + self.o_proj + self.ffn + self.router

    def to_dict(self) -> dict[str, int]:
        return {
            "layer": self.layer,
            "queries": self.queries,
            "kv_tokens": self.kv_tokens,
            "attention_pairs": self.attention_pairs,
            **{c: getattr(self, c) for c in COMPONENTS},
            "flops": self.flops,
            "paper_units": self.paper_units,
        }


@dataclass(frozen=True)
class CostReport:
    """Forward FLOPs of a plan, per layer and in total."""

    shape: DecoderShape
    causal: str
    layers: tuple[LayerCost, ...]
    training_flops_factor: int = TRAINING_FLOPS_FACTOR
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def forward_flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def training_flops(self) -> int:
        return self.training_flops_factor * self.forward_flops

    @property
    def paper_units(self) -> int:
        return sum(layer.paper_units for layer in self.layers)

    def components(self) -> dict[str, int]:
        """Total forward FLOPs of each component over all layers."""
        return {c: sum(getattr(layer, c) for layer in self.layers) for c in COMPONENTS}

    def ratio_to(self, baseline: CostReport) -> float:
        """Forward (equally, training) FLOPs relative to `baseline`."""
        self._check_comparable(baseline)
        return self.forward_flops / baseline.forward_flops

    def paper_ratio_to(self, baseline: CostReport) -> float:
        """The same ratio under the paper's asymptotic convention."""
        self._check_comparable(baseline)
        return self.paper_units / baseline.paper_units

    def _check_comparable(self, baseline: CostReport) -> None:
        if baseline.shape != self.shape or baseline.causal != self.causal:
            raise TokredError(
                "cost reports compare only on the same shape and causal convention "
                f"({self.causal} vs {baseline.causal})"
            )
        if baseline.forward_flops == 0:
            raise TokredError("the baseline costs 0 FLOPs: it has no tokens to compare against")

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_dict(),
            "causal": self.causal,
            "forward_flops": self.forward_flops,
            "training_flops": self.training_flops,
            "training_flops_factor": self.training_flops_factor,
            "paper_units": self.paper_units,
            "components": self.components(),
            "per_layer": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
        }


def cost_notes(causal: str) -> tuple[str, ...]:
    """The conventions behind a report, in words (the CLI prints them)."""
    pairs = (
        "attention counts only causally visible (query, key) pairs: key index <= query index"
        if causal == "exact"
        else "attention counts every query x every key/value token, as a dense unmasked kernel computes"
    )
    return (
        "forward FLOPs, 2 per multiply-add: Q and o_proj and FFN per query (ACTIVE token); "
        "K/V projections per key/value token (ACTIVE + INJECT; INJECT K/V are recomputed "
        "from layer-0 embeddings in every layer); attention 4*H*head_dim per (query, key) pair",
        pairs,
        "not counted: norms, RoPE, softmax, embeddings, lm_head",
        f"training FLOPs = {TRAINING_FLOPS_FACTOR} x forward (backward ~ 2 x forward)",
        "paper convention: per layer and sample n_q*n_kv*d + 8*n_q*d^2 (PAPER.md Cost_base, "
        "Cost_HiMix, Cost_HMGen): no causal halving, no K/V projections for INJECT tokens",
        "dynamic selections (fastv, pyramid_drop) keep ceil(keep_ratio * n) candidates, "
        "taken as the earliest ones",
        "routed layers (router) compute ceil(capacity * n) of their n candidates, taken as "
        "the earliest ones, plus 2*d per candidate for the router's score",
    )


def _check_causal(causal: str) -> None:
    if causal not in CAUSAL_MODES:
        raise TokredError(f"causal={causal!r} must be one of {', '.join(CAUSAL_MODES)}")


def plan_cost(plan: ReductionPlan, shape: DecoderShape, causal: Causal = "exact") -> CostReport:
    """Price a plan. Dynamic selections are resolved with `plan.resolved_by_position()`.

    Every non-DROPPED token is taken to be a real token: mark padding DROPPED first
    (`TaskPolicies` does; `policy_cost` does it for a bare policy).
    """
    _check_causal(causal)
    if plan.num_layers != shape.num_layers:
        raise TokredError(
            f"the plan has {plan.num_layers} layers but the decoder shape has {shape.num_layers}"
        )
    dynamic = plan.selections or plan.routes
    roles = plan.resolved_by_position().roles if dynamic else plan.roles
    routed = _router_candidates(plan)
    queries = roles == Role.ACTIVE
    kv = queries | (roles == Role.INJECT)
    n_q = queries.sum(-1).long()  # (L, B)
    n_kv = kv.sum(-1).long()
    if causal == "exact":
        # A query at index i sees the kv tokens at indices <= i: the running kv count.
        pairs = (kv.long().cumsum(-1) * queries).sum(-1)
    else:
        pairs = n_q * n_kv

    d, qw, kvw = shape.hidden_size, shape.q_width, shape.kv_width
    ffn_mats = 3 if shape.gated_ffn else 2
    layers = []
    # Python ints from here: the totals of a 7B model overflow nothing, but stay exact.
    for layer, (q_row, kv_row, pair_row) in enumerate(
        zip(n_q.tolist(), n_kv.tolist(), pairs.tolist(), strict=True)
    ):
        nq, nkv, npairs = sum(q_row), sum(kv_row), sum(pair_row)
        layers.append(
            LayerCost(
                layer=layer,
                queries=nq,
                kv_tokens=nkv,
                attention_pairs=npairs,
                q_proj=2 * d * qw * nq,
                kv_proj=2 * 2 * d * kvw * nkv,
                attention=4 * shape.num_heads * shape.head_dim * npairs,  # type: ignore[operator]
                o_proj=2 * qw * d * nq,
                ffn=2 * ffn_mats * d * shape.intermediate_size * nq,
                router=2 * d * routed.get(layer, 0),
                # Per sample: the paper's n_q * n_kv is a per-sequence product.
                paper_units=sum(
                    q * k * d + 8 * q * d * d for q, k in zip(q_row, kv_row, strict=True)
                ),
            )
        )
    return CostReport(shape=shape, causal=causal, layers=tuple(layers), notes=cost_notes(causal))


def _router_candidates(plan: ReductionPlan) -> dict[int, int]:
    """{layer: candidates its routers score}, over the routes of the plan."""
    counts: dict[int, int] = {}
    for r in plan.routes:
        counts[r.layer] = counts.get(r.layer, 0) + int(plan.route_candidates(r).sum())
    return counts


def policy_cost(
    policies: TaskPolicies | Policy | str,
    shape: DecoderShape,
    layout: TokenLayout,
    causal: Causal = "exact",
) -> CostReport:
    """Price a policy (or a per-task composition) on a layout; padding costs nothing."""
    if isinstance(policies, str):
        policies = build_policy(policies)
    plan = policies.plan(layout, shape.num_layers)
    if isinstance(policies, Policy):
        # A bare policy plans padding as ACTIVE; TaskPolicies already drops it.
        plan.roles.masked_fill_(~layout.valid_mask()[None], int(Role.DROPPED))
    return plan_cost(plan, shape, causal)


def canonical_spans(
    task: Task | str, text_tokens: int, image_tokens: int
) -> list[tuple[Segment, int]]:
    """The segment spans of one canonical sample with T text and M image tokens.

    understanding: system T//4, image M, instruction T//4, output T - 2*(T//4)
    generation:    system T//4, instruction T - T//4, output M (the image tokens)
    """
    task = parse_task(task)
    for name, value in (("text_tokens", text_tokens), ("image_tokens", image_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TokredError(f"{name}={value!r} must be a positive integer")
    quarter = text_tokens // 4
    if task is Task.UNDERSTANDING:
        return [
            (Segment.SYSTEM, quarter),
            (Segment.IMAGE, image_tokens),
            (Segment.INSTRUCTION, quarter),
            (Segment.OUTPUT, text_tokens - 2 * quarter),
        ]
    return [
        (Segment.SYSTEM, quarter),
        (Segment.INSTRUCTION, text_tokens - quarter),
        (Segment.OUTPUT, image_tokens),
    ]


def canonical_layout(task: Task | str, text_tokens: int, image_tokens: int) -> TokenLayout:
    """A one-sample layout with the spans of `canonical_spans` (no padding)."""
    spans = canonical_spans(task, text_tokens, image_tokens)
    return TokenLayout.from_spans([spans], [parse_task(task)])

"""The reduced decoder layer: one layer of a plan, computing only tokens that have work.

Per layer and sample, from the roles (tokred_core.roles):
- queries are the ACTIVE tokens; keys/values are ACTIVE tokens plus INJECT tokens, whose
  keys/values come from the layer-0 embeddings through this layer's input norm and its
  image projections (HiMix);
- ACTIVE tokens are gathered out of the residual stream, go through attention and the FFN,
  and are scattered back; INJECT, BYPASS and DROPPED hidden states are left untouched;
- in a routed layer (the router policy) the router picks which candidates are ACTIVE and
  gates their update (routing.py).
Masking alone would save nothing: here the matrices shrink with the plan.

Every token keeps its original RoPE position (cos/sin are gathered from the model's own
position embeddings), causal order is by sequence index, and attention goes through
`scaled_dot_product_attention` (never eager attention or output_attentions).
"""

from __future__ import annotations

import torch
from tokred_core import Role, TokredError, keep_counts
from tokred_kernels import (
    attention_importance,
    gather_packed,
    pack_to_padded,
    padded_to_packed,
    scatter_packed,
    topk_per_sample,
)
from torch import nn

from .adapters.base import DecoderAdapter
from .bucketed_attention import bucketed_attention
from .layer_keys import LayerKeys
from .projections import projection_modules, stacked_projection
from .routing import gated_update, layer_routers, route_gate
from .spmd import zero_touch
from .state import ExecutionState

__all__ = ["ReducedLayerForward"]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (n, heads, D); cos/sin (n, D) at each token's own position."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class ReducedLayerForward:
    """Bound as the `forward` of one decoder layer instance (see patch.py).

    Without a `tokred_state` kwarg (e.g. `generate()` with a KV cache) it runs the layer's
    original forward unchanged.

    Runs of layers (schedule.py): the first layer of a run gathers the ACTIVE rows out of
    the hidden states, every layer of the run updates them packed, and the last one
    scatters them back. The layers in between hand the run's input on unchanged (the
    decoder loop passes each layer's output to the next), so the stream is gathered and
    scattered once per run instead of once per layer.
    """

    def __init__(
        self,
        layer: nn.Module,
        layer_idx: int,
        adapter: DecoderAdapter,
        original_forward,
        sets: tuple[str, ...],
        norm_placement: str,
        window: int | None,
    ) -> None:
        self.layer = layer
        self.layer_idx = layer_idx
        self.adapter = adapter
        self.original_forward = original_forward
        self.sets = sets
        self.norm_placement = norm_placement
        self.window = window

    def __call__(
        self,
        hidden_states: torch.Tensor,
        *args,
        tokred_state: ExecutionState | None = None,
        **kwargs,
    ):
        if tokred_state is None:
            return self.original_forward(hidden_states, *args, **kwargs)
        cache = kwargs.get("past_key_values")
        if cache is not None and cache.get_seq_length() > 0:
            raise TokredError(
                "a reduced forward cannot continue a KV cache; call the model without tokred_layout "
                "for incremental decoding"
            )
        position_embeddings = kwargs.get("position_embeddings")
        if position_embeddings is None:
            raise TokredError(f"{type(self.layer).__name__} was called without position_embeddings")
        state = tokred_state
        if self.layer_idx == 0 and state.embeddings is None:
            state.embeddings = hidden_states
        state.layout.check_length(hidden_states.shape[1], hidden_states.shape[0])
        return self.adapter.wrap_output(self._run_step(hidden_states, position_embeddings, state))

    def _run_step(self, x: torch.Tensor, position_embeddings, state: ExecutionState):
        """This layer's part of its run: gather at its start, scatter at its end."""
        layer, idx = self.layer, self.layer_idx
        # A routed layer (its own run) learns which candidates run only now: its router
        # picks, and its pattern is rebuilt from the picks (routing.py).
        gate = route_gate(layer, idx, state, x) if idx in state.routes else None
        pattern = state.schedule.pattern(idx)
        active = pattern.active.index
        if active.total == 0:  # nothing has work in this layer
            return x + zero_touch(layer, x)
        first, last = state.schedule.run_of(idx) if state.pack_runs else (idx, idx)
        if idx == first or state.carried is None:
            base, packed = x, gather_packed(x, active)
        else:
            base, packed = state.carried
            if x is not base:
                raise TokredError(
                    f"layer {idx} got hidden states other than its run's (layers {first}-"
                    f"{last}): something between decoder layers changed them; set the "
                    "reduction handle's pack_runs = False"
                )

        def run(rows: torch.Tensor, embeddings: torch.Tensor | None) -> torch.Tensor:
            return self.compute_packed(rows, position_embeddings, state, embeddings)

        rows_in = packed
        if getattr(layer, "gradient_checkpointing", False) and layer.training:
            if torch.is_grad_enabled():
                # This instance `forward` shadows the class forward that Hugging Face wraps
                # with checkpointing (GradientCheckpointingLayer), so checkpoint here. The
                # layer-0 embeddings go in as an input too, so that reentrant checkpointing
                # also sends the INJECT keys/values' gradient back to them.
                packed = layer._gradient_checkpointing_func(run, packed, state.embeddings)
            else:
                packed = run(packed, state.embeddings)
        else:
            packed = run(packed, state.embeddings)
        if gate is not None:
            packed = gated_update(rows_in, packed, gate, active)
        elif (routers := layer_routers(layer)) is not None:
            # Routers this step does not use still join the graph (SPMD, spmd.py).
            packed = packed + zero_touch(routers, packed)
        if idx == last:
            state.carried = None
            return scatter_packed(base, packed, active)
        state.carried = (base, packed)
        return base

    # ------------------------------------------------------------------------------------
    def compute_packed(
        self,
        x_act: torch.Tensor,
        position_embeddings,
        state: ExecutionState,
        embeddings: torch.Tensor | None,
    ) -> torch.Tensor:
        """The layer on its ACTIVE rows (packed, in the pattern's order) -> their new values.
        `embeddings` are the layer-0 hidden states (a checkpointed copy of them)."""
        attn = self.adapter.attention(self.layer)
        pattern = state.schedule.pattern(self.layer_idx)
        seq = state.layout.seq_len
        q, keys = self._qkv(
            x_act, embeddings, pattern, self._rope_rows(state, pattern, position_embeddings), seq
        )
        a_idx = pattern.active.index
        q_pad = pack_to_padded(q, a_idx).transpose(1, 2)  # (B, H, Nq, D)
        self._observe(state, attn, q_pad, a_idx, keys, a_idx.batch_size, seq)
        dropout = getattr(attn, "attention_dropout", 0.0) if attn.training else 0.0
        o = bucketed_attention(
            q_pad,
            keys.query_tokens,
            a_idx.padded_valid,
            keys.block,
            pattern.buckets,
            scale=attn.scaling,
            dropout=dropout,
            window=self.window,
            masks=pattern.cache,
        )
        heads = q.shape[1]
        o = padded_to_packed(
            o.transpose(1, 2).reshape(a_idx.batch_size, -1, heads * q.shape[2]), a_idx
        )
        return self._residual(x_act, attn.o_proj(o)).to(x_act.dtype)

    def _rope_rows(self, state: ExecutionState, pattern, position_embeddings):
        """(cos, sin) at the ACTIVE rows (the queries) and at the stacked key rows (ACTIVE,
        then INJECT), gathered once per forward for all the layers of a pattern (they take
        the same position embeddings)."""
        key = (id(pattern), id(position_embeddings[0]))
        rows = state.rope_rows.get(key)
        if rows is None:
            bsz, seq = state.layout.batch_size, state.layout.seq_len
            cos, sin = (t.expand(bsz, -1, -1).reshape(bsz * seq, -1) for t in position_embeddings)
            keys = pattern.active.index.indices
            if pattern.inject.total:
                keys = torch.cat([keys, pattern.inject.index.indices])
            cos_k, sin_k = cos.index_select(0, keys), sin.index_select(0, keys)
            n = pattern.active.total  # the queries are the first rows of the key stack
            rows = (cos_k[:n], sin_k[:n], cos_k, sin_k)
            state.rope_rows[key] = rows
        return rows

    def _project(self, rows: torch.Tensor, counts: list, name: str, heads: int):
        """One of q/k/v_proj over stacked sets of packed rows, each row through its group's
        projection set, one call per projection set (projections.py)."""
        modules = projection_modules(self.adapter.attention(self.layer), name, self.sets)
        return stacked_projection(rows, counts, modules).view(-1, heads, self._head_dim())

    def _head_dim(self) -> int:
        return _head_counts(self.adapter.attention(self.layer))[2]

    def _input_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.adapter.input_norm(self.layer)(h) if self.norm_placement == "pre" else h

    def _qkv(self, x_act, embeddings, pattern, rope, seq):
        """The ACTIVE rows' queries, and the layer's keys/values: the ACTIVE rows', then
        (HiMix) the INJECT tokens', from their layer-0 embeddings through this layer's
        input norm and projections. Both key sets go through each step (norm, k/v_proj,
        RoPE, placement) as one stack of rows (layer_keys.py)."""
        attn = self.adapter.attention(self.layer)
        heads, kv_heads, _ = _head_counts(attn)
        active, inject = pattern.active, pattern.inject
        rows, counts = x_act, [active.group_counts]
        if inject.total:
            if embeddings is None:
                raise TokredError(
                    "INJECT tokens need the layer-0 embeddings, but layer 0 did not run"
                )
            rows = torch.cat([x_act, gather_packed(embeddings, inject.index)])
            counts.append(inject.group_counts)
        h = self._input_norm(rows)
        h_act = h.split([active.total, inject.total])[0] if inject.total else h
        q = self._project(h_act, counts[:1], "q_proj", heads)
        k = self._project(h, counts, "k_proj", kv_heads)
        v = self._project(h, counts, "v_proj", kv_heads)
        q, k = self.adapter.qk_norm(attn, q, k)
        cos_q, sin_q, cos_k, sin_k = rope
        return _rope(q, cos_q, sin_q), LayerKeys(_rope(k, cos_k, sin_k), v, pattern, seq)

    def _observe(self, state, attn, q_pad, a_idx, keys, bsz, seq) -> None:
        """The probe and the dynamic selections see the whole batch's keys in one block."""
        if state.probe is None and not state.plan.selections_at(self.layer_idx):
            return
        k_pad = keys.k  # (B, Hkv, Nk, D)
        q_tok = keys.query_tokens
        k_tok, k_valid = keys.layout.tokens, keys.layout.valid
        q_valid = a_idx.padded_valid
        if state.probe is not None and self.layer_idx not in state.probed_layers:
            state.probed_layers.add(self.layer_idx)  # once per forward, not again on recompute
            state.probe(
                state,
                self.layer_idx,
                q_pad,
                k_pad,
                q_tok,
                k_tok,
                q_valid,
                k_valid,
                window=self.window,
                scale=attn.scaling,
            )
        self._select(state, q_pad, k_pad, q_tok, k_tok, q_valid, k_valid, bsz, seq)

    def _residual(self, x_act: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Attention output into the residual, then the FFN, in the family's norm placement."""
        layer, adapter = self.layer, self.adapter
        if self.norm_placement == "pre":
            x1 = x_act + o
            return x1 + adapter.mlp(layer)(adapter.post_norm(layer)(x1))
        x1 = x_act + adapter.input_norm(layer)(o)
        return x1 + adapter.post_norm(layer)(adapter.mlp(layer)(x1))

    # ------------------------------------------------------------------------------------
    def _select(self, state, q_pad, k_pad, q_tok, k_tok, q_valid, k_valid, bsz, seq) -> None:
        """Dynamic drops scored in this layer (FastV / PyramidDrop); made once per forward."""
        selections = state.plan.selections_at(self.layer_idx)
        if not selections or self.layer_idx in state.selected_layers:
            return
        state.selected_layers.add(self.layer_idx)
        active = state.roles[self.layer_idx] == Role.ACTIVE
        with torch.no_grad():
            for sel in selections:
                q_sel = sel.queries.gather(1, q_tok) & q_valid
                cand = (sel.candidates & active).gather(1, k_tok) & k_valid
                scores = attention_importance(
                    q_pad.detach(),
                    k_pad.detach(),
                    q_sel,
                    cand,
                    key_valid=k_valid,
                    query_positions=q_tok,
                    key_positions=k_tok,
                    scale=self.adapter.attention(self.layer).scaling,
                )
                keep = keep_counts(cand.sum(-1), sel.keep_ratio)
                kept_slots = topk_per_sample(scores, cand, keep)
                kept = torch.zeros(bsz * seq, dtype=torch.bool, device=kept_slots.device)
                rows = torch.arange(bsz, device=k_tok.device)[:, None] * seq + k_tok
                kept[rows[kept_slots]] = True
                kept = kept.view(bsz, seq)
                state.plan.apply_selection(sel, kept)
        # The roles after this layer changed: their index sets, built from the roles on the
        # host, are rebuilt once here (the one read-back of a selection).
        state.schedule.refresh(self.layer_idx + 1, state.plan.roles)


def _head_counts(attn: nn.Module) -> tuple[int, int, int]:
    # From the config, not the weights: a 4-bit or LoRA-wrapped projection hides its shape.
    config = attn.config
    return config.num_attention_heads, config.num_key_value_heads, attn.head_dim

"""The reduced decoder layer: one layer of a plan, computing only tokens that have work.

Per layer and sample, from the roles (tokred_core.roles):
- queries are the ACTIVE tokens; keys/values are ACTIVE tokens plus INJECT tokens, whose
  keys/values come from the layer-0 embeddings through this layer's input norm and its
  image projections (HiMix);
- ACTIVE tokens are gathered out of the residual stream, go through attention and the FFN,
  and are scattered back; INJECT, BYPASS and DROPPED hidden states are left untouched.
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
    token_index,
    topk_per_sample,
)
from torch import nn

from .adapters.base import DecoderAdapter
from .bucketed_attention import KeyPart, bucketed_attention
from .projections import grouped_projection, projection_modules
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
        if self.layer_idx == 0 and tokred_state.embeddings is None:
            tokred_state.embeddings = hidden_states
        layer = self.layer
        checkpointing = getattr(layer, "gradient_checkpointing", False) and layer.training
        if checkpointing and torch.is_grad_enabled():
            # This instance `forward` shadows the class forward that Hugging Face wraps with
            # checkpointing (GradientCheckpointingLayer), so checkpoint here ourselves. The
            # layer-0 embeddings go in as an input too, so that reentrant checkpointing also
            # sends the INJECT keys/values' gradient back to them.
            def run(x: torch.Tensor, embeddings: torch.Tensor | None) -> torch.Tensor:
                return self.forward(x, position_embeddings, tokred_state, embeddings)

            out = layer._gradient_checkpointing_func(run, hidden_states, tokred_state.embeddings)
        else:
            out = self.forward(hidden_states, position_embeddings, tokred_state)
        return self.adapter.wrap_output(out)

    # ------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        position_embeddings,
        state: ExecutionState,
        embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`embeddings` overrides `state.embeddings` (the checkpointed copy of them)."""
        layer, adapter = self.layer, self.adapter
        attn = adapter.attention(layer)
        bsz, seq, _ = x.shape
        state.layout.check_length(seq, bsz)
        if embeddings is None:
            embeddings = state.embeddings
        roles = state.roles[self.layer_idx]
        active = roles == Role.ACTIVE
        inject = roles == Role.INJECT
        a_idx = token_index(active)
        if a_idx.total == 0:
            return x  # nothing has work in this layer

        cos, sin = (t.expand(bsz, -1, -1).reshape(bsz * seq, -1) for t in position_embeddings)
        groups = state.groups.reshape(-1)
        heads, kv_heads, head_dim = _head_counts(attn)

        x_act = gather_packed(x, a_idx)
        h = adapter.input_norm(layer)(x_act) if self.norm_placement == "pre" else x_act
        g_act = groups.index_select(0, a_idx.indices)
        q = grouped_projection(h, g_act, projection_modules(attn, "q_proj", self.sets)).view(
            -1, heads, head_dim
        )
        k = grouped_projection(h, g_act, projection_modules(attn, "k_proj", self.sets)).view(
            -1, kv_heads, head_dim
        )
        v = grouped_projection(h, g_act, projection_modules(attn, "v_proj", self.sets)).view(
            -1, kv_heads, head_dim
        )
        q, k = adapter.qk_norm(attn, q, k)
        c_a, s_a = cos.index_select(0, a_idx.indices), sin.index_select(0, a_idx.indices)
        q, k = _rope(q, c_a, s_a), _rope(k, c_a, s_a)

        q_pad = pack_to_padded(q, a_idx).transpose(1, 2)  # (B, H, Nq, D)
        k_parts = [pack_to_padded(k, a_idx)]
        v_parts = [pack_to_padded(v, a_idx)]
        kv_tok = [a_idx.padded_indices % max(seq, 1)]
        kv_valid = [a_idx.padded_valid]
        kv_counts = [a_idx.counts.tolist()]
        if bool(inject.any()):
            if embeddings is None:
                raise TokredError(
                    "INJECT tokens need the layer-0 embeddings, but layer 0 did not run"
                )
            i_idx = token_index(inject)
            e = gather_packed(embeddings, i_idx)
            e = adapter.input_norm(layer)(e) if self.norm_placement == "pre" else e
            g_inj = groups.index_select(0, i_idx.indices)
            ki = grouped_projection(e, g_inj, projection_modules(attn, "k_proj", self.sets)).view(
                -1, kv_heads, head_dim
            )
            vi = grouped_projection(e, g_inj, projection_modules(attn, "v_proj", self.sets)).view(
                -1, kv_heads, head_dim
            )
            _, ki = adapter.qk_norm(attn, ki.new_zeros(ki.shape[0], heads, head_dim), ki)
            ki = _rope(ki, cos.index_select(0, i_idx.indices), sin.index_select(0, i_idx.indices))
            k_parts.append(pack_to_padded(ki, i_idx))
            v_parts.append(pack_to_padded(vi, i_idx))
            kv_tok.append(i_idx.padded_indices % max(seq, 1))
            kv_valid.append(i_idx.padded_valid)
            kv_counts.append(i_idx.counts.tolist())
        # The whole batch's keys in one padded block, for the probe and selections only.
        k_pad = torch.cat(k_parts, dim=1).transpose(1, 2)  # (B, Hkv, Nk, D)
        q_tok = a_idx.padded_indices % max(seq, 1)
        k_tok = torch.cat(kv_tok, dim=1)
        k_valid = torch.cat(kv_valid, dim=1)
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

        dropout = getattr(attn, "attention_dropout", 0.0) if attn.training else 0.0
        parts = [
            KeyPart(kp.transpose(1, 2), vp.transpose(1, 2), tok, valid, counts)
            for kp, vp, tok, valid, counts in zip(
                k_parts, v_parts, kv_tok, kv_valid, kv_counts, strict=True
            )
        ]
        o = bucketed_attention(
            q_pad,
            q_tok,
            q_valid,
            kv_counts[0],
            parts,
            scale=attn.scaling,
            dropout=dropout,
            window=self.window,
        )
        o = padded_to_packed(o.transpose(1, 2).reshape(bsz, -1, heads * head_dim), a_idx)
        o = attn.o_proj(o)
        if self.norm_placement == "pre":
            x1 = x_act + o
            x2 = x1 + adapter.mlp(layer)(adapter.post_norm(layer)(x1))
        else:
            x1 = x_act + adapter.input_norm(layer)(o)
            x2 = x1 + adapter.post_norm(layer)(adapter.mlp(layer)(x1))
        return scatter_packed(x, x2.to(x.dtype), a_idx)

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


def _head_counts(attn: nn.Module) -> tuple[int, int, int]:
    # From the config, not the weights: a 4-bit or LoRA-wrapped projection hides its shape.
    config = attn.config
    return config.num_attention_heads, config.num_key_value_heads, attn.head_dim

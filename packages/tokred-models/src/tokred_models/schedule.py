"""The step's schedule: every index a reduced layer needs, built once per step on the host.

A plan gives each layer a (B, N) role pattern. Most layers share a pattern with others
(HiMix: every layer from its start on; HMGen: every full layer), so the index sets are built
once per distinct pattern and shared by all its layers:
- the ACTIVE and INJECT `TokenIndex`es, with packed rows ordered by projection group, so
  that a grouped projection is a slice per group instead of an index_select/index_copy;
- the rows per group and per sample, as host lists: nothing in the decoder has to read a
  size back from the device (a synchronisation per call on a GPU);
- the attention buckets (bucketed_attention.py), with their row indices on the device.

Built from CPU tensors (where the batch is collated, in the prefetch thread when there is
one) and moved to the device once. Dynamic selections (FastV, PyramidDrop) change the
roles of the layers after their selection layer at run time: `refresh` rebuilds those
layers' patterns from the device roles with one copy to the host per selection layer.

Runs: consecutive layers with one pattern form a run, inside which the ACTIVE tokens can
stay packed (reduced_layer.py: one gather before the run, one scatter after it). A run
never continues past a selection layer, whose successors' roles are not known yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokred_core import Role
from tokred_kernels.gather_scatter import TokenIndex, token_index

from .bucketed_attention import AttentionBuckets, attention_buckets

__all__ = ["TokenSet", "LayerPattern", "StepSchedule"]


@dataclass
class TokenSet:
    """One selection of the pattern: its index (packed rows in projection-group order),
    the packed rows of each group and the tokens of each sample, both on the host."""

    index: TokenIndex
    group_counts: list[int]
    counts: list[int]

    @property
    def total(self) -> int:
        return self.index.total


@dataclass
class LayerPattern:
    active: TokenSet
    inject: TokenSet
    buckets: AttentionBuckets
    cache: dict = field(default_factory=dict)
    """Device tensors derived from positions only (gathered RoPE rows, attention masks),
    filled by the first layer that needs them and reused by the others."""

    @property
    def key_sets(self) -> list[TokenSet]:
        """The key/value parts of the layer's attention: ACTIVE, then INJECT if any."""
        return [self.active, self.inject] if self.inject.total else [self.active]

    @property
    def key_counts(self) -> list[int]:
        """Keys of each sample (host): its ACTIVE tokens plus its INJECT tokens."""
        return _key_counts(self.active, self.inject)

    @property
    def in_order(self) -> bool:
        """Every token is a query and a key, packed in its own order (an identity ACTIVE
        index, no INJECT tokens): the packed, padded and full layouts are one."""
        return self.active.index.identity and not self.inject.total


def _key_counts(active: TokenSet, inject: TokenSet) -> list[int]:
    return [a + i for a, i in zip(active.counts, inject.counts, strict=True)]


def _token_set(mask: torch.Tensor, groups: torch.Tensor, num_groups: int, device) -> TokenSet:
    index = token_index(mask)  # CPU: its size read-back costs nothing
    row_groups = groups.reshape(-1).index_select(0, index.indices)
    order = torch.sort(row_groups, stable=True).indices
    group_counts = torch.bincount(row_groups, minlength=num_groups).tolist()
    if not torch.equal(order, torch.arange(order.shape[0])):  # host tensors: no sync
        index = index.permuted(order)  # an index kept in its own order stays an identity
    return TokenSet(
        index.to(device, non_blocking=True),
        group_counts,
        index.counts.tolist(),
    )


def _pattern(
    roles: torch.Tensor, groups: torch.Tensor, num_groups: int, device, pair_macs: int
) -> LayerPattern:
    active = _token_set(roles == Role.ACTIVE, groups, num_groups, device)
    inject = _token_set(roles == Role.INJECT, groups, num_groups, device)
    buckets = attention_buckets(active.counts, _key_counts(active, inject), device, pair_macs)
    return LayerPattern(active, inject, buckets)


class StepSchedule:
    """The patterns of one step's layers; see the module docstring."""

    def __init__(
        self,
        roles: torch.Tensor,
        groups: torch.Tensor,
        num_groups: int,
        device: torch.device,
        selection_layers: tuple[int, ...] = (),
        routed_layers: tuple[int, ...] = (),
        pair_macs: int = 0,
    ) -> None:
        """roles: (L, B, N) on the CPU; groups: (B, N) on the CPU, values < num_groups.
        routed_layers (the router policy's) are runs of their own: their pattern is
        known only once their router has picked (`set_layer`). pair_macs: the model's
        multiply-adds per query-key pair (heads x head_dim), which lets the attention
        buckets weigh a call's overhead against its padding (bucketed_attention.py)."""
        self.groups = groups.cpu()
        self.pair_macs = pair_macs
        self.num_groups = num_groups
        self.device = device
        self.selection_layers = frozenset(selection_layers)
        self.routed_layers = frozenset(routed_layers)
        self.layer_patterns: list[LayerPattern] = []
        self._build(roles.cpu(), 0)

    def _build(self, roles: torch.Tensor, first: int) -> None:
        del self.layer_patterns[first:]
        seen: dict[bytes, LayerPattern] = {}
        for layer in range(first, roles.shape[0]):
            key = roles[layer].numpy().tobytes()
            if key not in seen:
                seen[key] = self._pattern(roles[layer])
            self.layer_patterns.append(seen[key])

    def _pattern(self, roles: torch.Tensor) -> LayerPattern:
        return _pattern(roles, self.groups, self.num_groups, self.device, self.pair_macs)

    def copy(self) -> StepSchedule:
        """A schedule sharing the patterns, whose later layers `refresh` may replace."""
        other = object.__new__(StepSchedule)
        other.__dict__.update(self.__dict__)
        other.layer_patterns = list(self.layer_patterns)
        return other

    def pattern(self, layer: int) -> LayerPattern:
        return self.layer_patterns[layer]

    def run_of(self, layer: int) -> tuple[int, int]:
        """(first, last) layer of the run `layer` belongs to."""
        first = layer
        while first > 0 and self._continues(first - 1):
            first -= 1
        last = layer
        while last + 1 < len(self.layer_patterns) and self._continues(last):
            last += 1
        return first, last

    def _continues(self, layer: int) -> bool:
        """Whether layer + 1 belongs to the run of `layer`."""
        if layer in self.selection_layers:
            return False
        if layer in self.routed_layers or layer + 1 in self.routed_layers:
            return False
        return self.layer_patterns[layer + 1] is self.layer_patterns[layer]

    def set_layer(self, layer: int, roles: torch.Tensor) -> None:
        """Rebuild the pattern of `layer` alone from its (B, N) device roles, after its
        router picked (one copy to the host); the other layers keep theirs."""
        self.layer_patterns[layer] = self._pattern(roles.cpu())

    def refresh(self, first: int, roles: torch.Tensor) -> None:
        """Rebuild the patterns of layers `first`.. from the (L, B, N) device roles, after a
        selection changed them: the one copy to the host of that selection."""
        if first < len(self.layer_patterns):
            self._build(roles.cpu(), first)

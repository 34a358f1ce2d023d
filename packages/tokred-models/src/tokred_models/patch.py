"""`apply_reduction`: patch a loaded Hugging Face model instance to execute reduction plans.

    handle = apply_reduction(model, {"understanding": "himix", "generation": "hmgen"}, sharing="task")
    out = model(input_ids=ids, attention_mask=mask, labels=labels, tokred_layout=layout)
    handle.undo()

Only the instance changes (never the classes, never forked modeling files): each decoder
layer gets an instance-level `forward` (reduced_layer.py), each attention module gets its
image projection sets (and, under the router policy, its routed layers get their
routers: routing.py), and a forward pre-hook on the model turns the `tokred_layout`
keyword into a per-call `ExecutionState` that Hugging Face passes down to every layer in
its kwargs. Called without `tokred_layout`, the model behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
from tokred_core import (
    Policy,
    ReductionPlan,
    Route,
    Selection,
    Sharing,
    TaskPolicies,
    TokenLayout,
    TokredError,
    image_sets,
    layer_projection_sets,
    parse_sharing,
    projection_groups,
)
from torch import nn

from .adapters import DecoderAdapter, adapter_for
from .projections import add_image_projections, remove_image_projections
from .reduced_layer import ReducedLayerForward
from .routing import add_routers, remove_routers, route_sets
from .schedule import StepSchedule
from .state import ExecutionState, PreparedStep, ProbeCallback

__all__ = [
    "apply_reduction",
    "reduction_handle",
    "patched_model",
    "ReductionHandle",
    "HANDLE_ATTR",
    "LAYOUT_KWARG",
    "STATE_KWARG",
]

LAYOUT_KWARG = "tokred_layout"
STATE_KWARG = "tokred_state"
#: Where a patched model holds its ReductionHandle. A wrapper that runs a patched model
#: (e.g. a decoding adapter) may set it to the same handle, to be seen as patched too.
HANDLE_ATTR = "_tokred_handle"


@dataclass
class ReductionHandle:
    model: nn.Module
    adapter: DecoderAdapter
    policies: TaskPolicies
    sharing: Sharing
    _forwards: list[ReducedLayerForward] = field(default_factory=list)
    _hooks: list = field(default_factory=list)
    probe: ProbeCallback | None = None
    """Called by every reduced layer with its queries and keys (attention probe)."""
    pack_runs: bool = True
    """Keep ACTIVE tokens packed through runs of layers that share them. Off where a
    wrapper hooks each layer's inputs and outputs (FSDP2 gathers a layer's weights for its
    backward when the gradient of the layer's output arrives; inside a run the output is
    passed through and that gradient comes too late)."""

    @property
    def num_layers(self) -> int:
        return len(self._forwards)

    def set_policies(self, policies) -> None:
        """Plan with other policies from now on. The image projection sets stay as they
        were patched (they are the model's weights), also the per-layer ones of `aligned`
        sharing, which were chosen from the policies given to apply_reduction."""
        self.policies = _as_task_policies(policies)
        self._add_routers()

    def _add_routers(self) -> None:
        """A router per (task, layer) the policies route (routing.py); existing ones stay."""
        wanted: dict[int, list] = {}
        for task, layers in self.policies.routed_layers(self.num_layers).items():
            for idx in layers:
                wanted.setdefault(idx, []).append(task)
        for idx, tasks in wanted.items():
            layer = self._forwards[idx].layer
            add_routers(layer, tasks, self.adapter.attention(layer).config.hidden_size)

    def plan(self, layout: TokenLayout):
        return self.policies.plan(layout, self.num_layers)

    def prepare(
        self,
        layout: TokenLayout,
        attention_mask: torch.Tensor | None = None,
        *,
        policies: TaskPolicies | None = None,
        full_layers: Collection[int] = (),
    ) -> PreparedStep:
        """The plan and schedule of one batch, built on the host and moved to the model's
        device once (call it where the batch is collated, e.g. in a prefetch thread).
        Pass the result as `tokred_layout`. With the batch's (CPU) `attention_mask` the
        padding check is done here, on the host, instead of on the device per forward.

        policies: plan this batch with these instead of the handle's own (a training
        strategy's unreduced steps: `TaskPolicies()`); the sharing stays the handle's.
        full_layers: layers that run every remaining token in full
        (`ReductionPlan.with_full_layers`)."""
        if not isinstance(layout, TokenLayout):
            raise TokredError(f"{LAYOUT_KWARG} must be a TokenLayout, got {type(layout).__name__}")
        host = TokenLayout(layout.segments.cpu(), layout.tasks.cpu())
        checked = None
        if attention_mask is not None:
            checked = attention_mask.cpu()
            _check_mask(checked, host)
        plan = (self.policies if policies is None else policies).plan(host, self.num_layers)
        if full_layers:
            plan = plan.with_full_layers(full_layers)
        device = _model_device(self.model)
        schedule = StepSchedule(
            plan.roles,
            projection_groups(host, self.sharing),
            1 + len(image_sets(self.sharing)),
            device,
            tuple(s.layer for s in plan.selections),
            plan.route_layers,
            self._pair_macs(),
        )
        return PreparedStep(
            TokenLayout(host.segments.to(device), host.tasks.to(device)),
            _plan_on(plan, device),
            schedule,
            checked,
            route_sets(plan, device),
        )

    def _pair_macs(self) -> int:
        """Multiply-adds per query-key pair of the model's attention (heads x head_dim)."""
        if not self._forwards:
            return 0
        attn = self.adapter.attention(self._forwards[0].layer)
        return int(attn.config.num_attention_heads * attn.head_dim)

    def state_for(self, layout: TokenLayout | PreparedStep) -> ExecutionState:
        """A fresh per-forward state from a layout or a prepared step."""
        prepared = layout if isinstance(layout, PreparedStep) else self.prepare(layout)
        # Selections and routes rewrite the plan in the forward.
        dynamic = bool(prepared.plan.selections or prepared.plan.routes)
        return ExecutionState(
            layout=prepared.layout,
            plan=prepared.plan.clone() if dynamic else prepared.plan,
            schedule=prepared.schedule.copy() if dynamic else prepared.schedule,
            probe=self.probe,
            pack_runs=self.pack_runs,
            routes=prepared.routes,
        )

    def undo(self) -> None:
        """Restore the model: original forwards, no image projections, no hooks."""
        for fwd in self._forwards:
            if "forward" in fwd.layer.__dict__:
                del fwd.layer.__dict__["forward"]
            remove_image_projections(self.adapter.attention(fwd.layer))
            remove_routers(fwd.layer)
        for hook in self._hooks:
            hook.remove()
        self._forwards.clear()
        self._hooks.clear()
        if getattr(self.model, HANDLE_ATTR, None) is self:
            delattr(self.model, HANDLE_ATTR)

    def __enter__(self) -> ReductionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def _as_task_policies(policies) -> TaskPolicies:
    if policies is None:
        return TaskPolicies()
    if isinstance(policies, TaskPolicies):
        return policies
    if isinstance(policies, (Policy, str)):
        return TaskPolicies.uniform(policies)
    if isinstance(policies, Mapping):
        return TaskPolicies(policies)
    raise TokredError(
        f"policies must be a TaskPolicies, a mapping task->policy or a policy, got {policies!r}"
    )


def _check_mask(mask: torch.Tensor, layout: TokenLayout) -> None:
    if mask.shape != layout.segments.shape or not torch.equal(
        mask.to(torch.bool), layout.valid_mask().to(mask.device)
    ):
        raise TokredError("attention_mask and tokred_layout disagree on which tokens are padding")


def _plan_on(plan: ReductionPlan, device: torch.device) -> ReductionPlan:
    selections = tuple(
        Selection(s.layer, s.candidates.to(device), s.queries.to(device), s.keep_ratio)
        for s in plan.selections
    )
    routes = tuple(Route(r.layer, r.task, r.candidates.to(device), r.capacity) for r in plan.routes)
    return ReductionPlan(plan.roles.to(device), selections, routes)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def apply_reduction(
    model: nn.Module,
    policies: TaskPolicies | Mapping | Policy | str | None = None,
    sharing: Sharing | str = "shared",
) -> ReductionHandle:
    """Patch `model` in place; returns the handle that undoes it.

    policies: one policy for both tasks, a {task: policy} mapping, or a TaskPolicies.
    sharing:  "shared" | "modality" | "task" | "aligned" image projection sets
              (tokred_core.sharing; `aligned` reads the policies: tokred_core.alignment).
    """
    if getattr(model, HANDLE_ATTR, None) is not None:
        raise TokredError("this model is already patched; call handle.undo() before patching again")
    adapter = adapter_for(model)
    sharing = parse_sharing(sharing)
    handle = ReductionHandle(model, adapter, _as_task_policies(policies), sharing)
    placement = adapter.norm_placement(model)
    decoder = adapter.decoder(model)
    layers = adapter.layers(model)
    # Per layer, the set each projection group uses (`aligned` shares one set in the layers
    # where the tasks' plans coincide; every other mode uses the same sets in every layer).
    layer_sets = layer_projection_sets(sharing, handle.policies, len(layers))
    for idx, layer in enumerate(layers):
        sets = layer_sets[idx]
        add_image_projections(adapter.attention(layer), tuple(dict.fromkeys(sets)))
        fwd = ReducedLayerForward(
            layer, idx, adapter, layer.forward, sets, placement, adapter.sliding_window(model, idx)
        )
        layer.__dict__["forward"] = fwd  # instance attribute shadows the class method
        handle._forwards.append(fwd)
    handle._add_routers()

    def pre_hook(module, args, kwargs):
        if LAYOUT_KWARG not in kwargs:
            return None
        layout = kwargs.pop(LAYOUT_KWARG)
        if layout is not None:
            state = handle.state_for(layout)
            # Check the shape against the inputs here, before any layer runs, so a wrong
            # layout is reported as such rather than as a padding disagreement.
            inputs = kwargs.get("input_ids", args[0] if args else None)
            if not isinstance(inputs, torch.Tensor):
                inputs = kwargs.get("inputs_embeds")
            if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2:
                state.layout.check_length(inputs.shape[1], inputs.shape[0])
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() == 2:
                checked = layout.checked_mask if isinstance(layout, PreparedStep) else None
                # A prepared step was checked on the host against its batch's own mask; a
                # device comparison here would cost a synchronisation every forward.
                if checked is None or checked.shape != mask.shape:
                    _check_mask(mask, state.layout)
            if kwargs.get("output_hidden_states"):
                state.pack_runs = False  # every layer's output must then be whole
            kwargs[STATE_KWARG] = state
            # A reduced forward fills no KV cache; asking for one would return an empty cache
            # that silently loses the context if reused for decoding.
            kwargs["use_cache"] = False
        return args, kwargs

    handle._hooks.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
    if decoder is not model:
        handle._hooks.append(decoder.register_forward_pre_hook(pre_hook, with_kwargs=True))
    setattr(model, HANDLE_ATTR, handle)
    return handle


def reduction_handle(model: nn.Module) -> ReductionHandle | None:
    """The handle of the reduction applied to `model` (None when it is not patched).

    A peft wrapper forwards attribute reads to the model it wraps, so the handle of a
    patched model is found through its wrapper too."""
    return getattr(model, HANDLE_ATTR, None)


def patched_model(model: nn.Module) -> nn.Module:
    """The module `apply_reduction` patched: `model` itself, or the model inside its peft
    wrapper (`base_model.model`). A TokredError when neither is patched."""
    # The wrapper would answer for its inner model (see reduction_handle): look inside first.
    inner = getattr(getattr(model, "base_model", None), "model", None)
    for candidate in (inner, model):
        if isinstance(candidate, nn.Module) and HANDLE_ATTR in vars(candidate):
            return candidate
    raise TokredError(f"{type(model).__name__} is not reduction-patched (apply_reduction)")

"""The step's schedule (schedule.py) and what it buys: no device-to-host synchronisation in
the decoder for static plans, packed runs of layers equal to layer-by-layer execution, and
one read-back per selection layer for dynamic plans.

A synchronisation is a call that needs a device value on the host. On a GPU it stalls the
host until the device catches up; on this CPU it costs nothing, so the calls themselves are
counted: every Tensor method and torch function goes through `__torch_function__`, and a
TorchFunctionMode sees them all, from layer 0's pre-hook to the last layer's output and
through the whole backward.
"""

from __future__ import annotations

import pytest
import torch
from tokred_core import Role, TokredError
from tokred_models import apply_reduction
from tokred_models.testing import (
    build_llama,
    grads,
    logit_loss,
    mixed_layout,
    perturb_image_projections_,
    policy_cases,
    random_ids,
    run,
)
from torch.overrides import TorchFunctionMode

LAYERS = 5
CASES = policy_cases(LAYERS)
DYNAMIC = {"fastv_last", "fastv_prompt", "pyramid_drop"}
STATIC = sorted(set(CASES) - DYNAMIC)

#: Calls that read a device value on the host (or need one to size their output).
SYNCING = {
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "argwhere",
    "unique",
    "unique_consecutive",
    "bincount",
    "masked_select",
    "equal",
    "allclose",
    "cpu",
    "numpy",
    "repeat_interleave",
}


def _to_host(func, args, kwargs) -> bool:
    """`.to(...)` onto the CPU (a device-to-host copy when the tensor is on a GPU)."""
    if getattr(func, "__name__", "") != "to":
        return False
    targets = list(args[1:]) + list((kwargs or {}).values())
    return any(str(t) == "cpu" for t in targets if isinstance(t, (str, torch.device)))


class SyncRecorder(TorchFunctionMode):
    """Records (layer, call) for every synchronising call while active."""

    def __init__(self) -> None:
        super().__init__()
        self.layer: int | str = "?"
        self.calls: list[tuple[int | str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING or _to_host(func, args, kwargs):
            self.calls.append((self.layer, name))
        return func(*args, **(kwargs or {}))


def _record_decoder(model, recorder: SyncRecorder) -> list:
    """Enter the recorder at layer 0's start, leave it after the last layer; note the layer."""
    layers = model.model.layers
    hooks = []
    for i, layer in enumerate(layers):

        def pre(module, args, i=i):
            if i == 0:
                recorder.__enter__()
            recorder.layer = i

        def post(module, args, out, i=i):
            if i == len(layers) - 1:
                recorder.__exit__(None, None, None)

        hooks.append(layer.register_forward_pre_hook(pre))
        hooks.append(layer.register_forward_hook(post))
    return hooks


def _model(name: str, checkpointing: str | None = None):
    policies, sharing = CASES[name]
    model = build_llama(layers=LAYERS, seed=0)
    handle = apply_reduction(model, policies, sharing)
    perturb_image_projections_(model)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
    return model, handle


def _forward_backward(model, handle, layout, recorder: SyncRecorder | None = None):
    ids = random_ids(layout)
    mask = layout.valid_mask()
    prepared = handle.prepare(layout, mask.long())  # on the host, before the forward
    hooks = _record_decoder(model, recorder) if recorder is not None else []
    try:
        logits = model(
            input_ids=ids, attention_mask=mask.long(), tokred_layout=prepared, use_cache=False
        ).logits
    finally:
        for h in hooks:
            h.remove()
    loss = logit_loss(
        logits, mask, torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    )
    if recorder is not None:
        recorder.layer = "backward"
        with recorder:
            loss.backward()
    else:
        loss.backward()
    return logits.detach()


@pytest.mark.parametrize("checkpointing", [None, "reentrant", "non-reentrant"])
@pytest.mark.parametrize("name", STATIC)
def test_static_plans_never_synchronise_in_the_decoder(name, checkpointing):
    model, handle = _model(name, checkpointing)
    recorder = SyncRecorder()
    _forward_backward(model, handle, mixed_layout(), recorder)
    assert recorder.calls == []


def test_the_recorder_sees_what_the_decoder_used_to_do():
    """The recorder is not blind: the old per-layer index building would be caught."""
    recorder = SyncRecorder()
    mask = torch.tensor([[True, False, True]])
    with recorder:
        counts = mask.sum(-1)
        int(counts.max().item())
        counts.tolist()
        torch.bincount(mask.long().reshape(-1))
        bool(mask.any())
        mask.to("cpu")
    assert [c for _, c in recorder.calls] == ["item", "tolist", "bincount", "__bool__", "to"]


@pytest.mark.parametrize("name", sorted(DYNAMIC))
def test_dynamic_plans_read_back_only_in_their_selection_layers(name):
    model, handle = _model(name)
    layout = mixed_layout()
    selection_layers = {s.layer for s in handle.plan(layout).selections}
    recorder = SyncRecorder()
    _forward_backward(model, handle, layout, recorder)
    layers = {layer for layer, _ in recorder.calls}
    assert layers and layers <= selection_layers
    # One copy of the roles to the host per selection layer rebuilds the later layers (the
    # `to` calls there move the rebuilt index sets onto the model's device).
    assert sum(call == "cpu" for _, call in recorder.calls) == len(selection_layers)


@pytest.mark.parametrize("checkpointing", [None, "reentrant", "non-reentrant"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_packed_runs_equal_layer_by_layer(name, checkpointing):
    results = []
    for pack in (True, False):
        model, handle = _model(name, checkpointing)
        handle.pack_runs = pack
        logits = _forward_backward(model, handle, mixed_layout("left"))
        results.append((logits, grads(model)))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], rtol=1e-5, atol=1e-6, msg=key)


def test_runs_share_patterns_and_stop_at_selection_layers():
    layout = mixed_layout()
    _, handle = _model("himix_hmgen_task")
    schedule = handle.prepare(layout).schedule
    plan = handle.plan(layout)
    for a in range(LAYERS):
        for b in range(LAYERS):
            same = torch.equal(plan.roles[a], plan.roles[b])
            assert (schedule.pattern(a) is schedule.pattern(b)) == same
    runs = {schedule.run_of(i) for i in range(LAYERS)}
    assert sorted(runs)[0][0] == 0 and sorted(runs)[-1][1] == LAYERS - 1
    _, fastv = _model("fastv_last")
    s = fastv.prepare(layout).schedule
    sel = fastv.plan(layout).selections[0].layer
    assert s.run_of(sel)[1] == sel  # a run never crosses its selection
    # Packed rows of each pattern are ordered by projection group.
    for pattern in schedule.layer_patterns:
        groups = handle.prepare(layout).schedule.groups.reshape(-1)[pattern.active.index.indices]
        assert torch.equal(groups, groups.sort().values)
        assert pattern.active.group_counts == torch.bincount(groups, minlength=3).tolist()


def test_a_stream_changed_inside_a_run_is_refused():
    model, handle = _model("himix")  # one pattern: every layer in one run
    layout = mixed_layout()
    assert handle.prepare(layout).schedule.run_of(2) == (0, LAYERS - 1)
    hook = model.model.layers[2].register_forward_pre_hook(lambda m, args: (args[0] * 1.0,))
    with pytest.raises(TokredError, match="pack_runs = False"):
        run(model, random_ids(layout), layout)
    handle.pack_runs = False  # the way out the message names
    run(model, random_ids(layout), layout)
    hook.remove()


def test_output_hidden_states_turns_packing_off():
    model, handle = _model("himix")
    layout = mixed_layout()
    out = model(
        input_ids=random_ids(layout),
        attention_mask=layout.valid_mask().long(),
        tokred_layout=layout,
        output_hidden_states=True,
        use_cache=False,
    )
    hidden = out.hidden_states
    text = layout.valid_mask() & (handle.plan(layout).roles[0] == Role.ACTIVE)
    # Every layer's output has its own ACTIVE rows (not the run's stale input).
    for before, after in zip(hidden[1:-2], hidden[2:-1], strict=True):
        assert not torch.equal(before[text], after[text])

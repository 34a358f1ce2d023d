"""The router policy's routed layers (routing.py) against a reference on random inputs.

The reference runs each sample alone through the model's own, unpatched decoder layers
(called without a `tokred_state`), with an explicit (N, N) mask: in a routed layer it
scores the candidates with the task's router, picks ceil(capacity * n) of them by score
(ties to earlier positions), and masks the unpicked ones (they neither query nor serve as
keys); a picked token's output is h + g * (layer(h) - h) with g = 1 + tanh(score), every
token that is not ACTIVE keeps its hidden state. BYPASS tokens of other policies (HMGen)
are masked the same way; INJECT (HiMix) is not expressible with the unpatched layer, so
HiMix rows are checked against a HiMix-only run of the same batch instead.
"""

from __future__ import annotations

import math

import pytest
import torch
from tokred_core import Role, Task, TaskPolicies, TokenLayout, TokredError
from tokred_core.policies import HiMix, HMGen, Router
from tokred_models import apply_reduction
from tokred_models.routing import layer_routers
from tokred_models.testing import (
    build_llama,
    capture_states,
    logit_loss,
    loss_weights,
    random_ids,
    rel_err,
    run,
)
from torch.overrides import TorchFunctionMode

LAYERS = 5
TOL = 1e-10
# Odd lengths, images of different sizes, a text-only understanding sample is absent on
# purpose (the router refuses it); generation outputs are the image tokens.
SPANS = [
    [("system", 2), ("image", 7), ("instruction", 3), ("output", 3)],
    [("system", 3), ("instruction", 2), ("output", 9)],
    [("system", 1), ("image", 5), ("instruction", 2), ("output", 2)],
    [("system", 1), ("instruction", 4), ("output", 5)],
    [("system", 2), ("image", 3), ("instruction", 1), ("output", 1)],
]
TASKS = ["understanding", "generation", "understanding", "generation", "understanding"]


def _layout(padding_side: str = "right") -> TokenLayout:
    return TokenLayout.from_spans(SPANS, TASKS, padding_side=padding_side)


@torch.no_grad()
def _randomize_routers(model, seed: int = 5) -> None:
    """Routers start at zero (every score ties); draw weights so that picks differ."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".token_router." in name:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def _router(layer, task) -> torch.nn.Module:
    return layer_routers(layer)[task.name.lower()]


def reference(model, plan, layout, ids, rows=None):
    """(B, N, V) logits (NaN in rows not checked) and the roles with the routers' picks."""
    dec = model.model
    roles = plan.roles.clone().long()
    # What the model's forward uses without position_ids (RoPE is relative, so a left pad
    # shifts nothing; the same absolute positions keep the float64 comparison tight).
    pos = torch.arange(layout.seq_len)[None].expand(layout.batch_size, -1)
    emb = dec.embed_tokens(ids)
    n = layout.seq_len
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    outs = []
    for b in range(layout.batch_size):
        if (rows is not None and not rows[b]) or bool((roles[:, b] == Role.INJECT).any()):
            outs.append(torch.full_like(emb[b : b + 1], float("nan")))
            continue
        h = emb[b : b + 1]
        pe = dec.rotary_emb(h, pos[b : b + 1])
        for li, layer in enumerate(dec.layers):
            active = roles[li, b] == Role.ACTIVE
            gate = torch.ones(n)
            for route in plan.routes_at(li):
                cand = route.candidates[b] & active
                if not cand.any():
                    continue
                score = _router(layer, route.task)(h[0]).squeeze(-1)
                keep = math.ceil(route.capacity * int(cand.sum()) - 1e-9)
                ranked = sorted(
                    torch.nonzero(cand).flatten().tolist(),
                    key=lambda j: (-float(score[j].detach()), j),
                )
                unpicked = cand.clone()
                unpicked[ranked[:keep]] = False
                active = active & ~unpicked
                roles[li, b, unpicked] = int(Role.BYPASS)
                gate = torch.where(cand, 1.0 + torch.tanh(score), gate)
            # Masked tokens attend to themselves only, so no softmax row is empty; their
            # outputs are discarded below.
            allowed = (active[:, None] & active[None, :] & causal) | torch.eye(n, dtype=torch.bool)
            out = layer(
                h,
                attention_mask=allowed[None, None],
                position_ids=pos[b : b + 1],
                position_embeddings=pe,
            )
            out = out[0] if isinstance(out, tuple) else out
            new = h + gate[None, :, None] * (out - h)
            h = torch.where(active[None, :, None], new, h)
        outs.append(h)
    return model.lm_head(dec.norm(torch.cat(outs))), roles


def _router_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if ".token_router." in n}


def _merged_grads(model) -> dict[str, torch.Tensor]:
    """Every weight's gradient, an image projection set's added to the text projection it
    copies (they are equal copies here, so the reference's text projection gets both)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        if ".image_proj." in name:
            head, tail = name.split(".image_proj.")
            name = f"{head}.{tail.split('.', 1)[1]}"
        out[name] = out[name] + grad if name in out else grad.clone()
    return out


CASES = {
    "both_tasks_task_sharing": (
        {"understanding": Router(capacity=0.5), "generation": Router(capacity=0.3)},
        "task",
        "right",
    ),
    "gen_router_und_hmgen_left_pad": (
        {"understanding": HMGen(num_shallow=1), "generation": Router(capacity=0.6)},
        "modality",
        "left",
    ),
    "und_router_gen_none_layers_0_to_4": (
        {"understanding": Router(capacity=0.4, start_layer=0, end_layer=LAYERS)},
        "shared",
        "right",
    ),
    "capacity_one": (TaskPolicies.uniform(Router(capacity=1.0)), "shared", "left"),
}


@pytest.fixture(scope="module")
def llama():
    return build_llama(LAYERS, seed=3).double()  # float64: the comparisons are tight


@pytest.mark.parametrize("case", list(CASES))
def test_routed_forward_and_grads_match_the_reference(llama, case):
    policies, sharing, side = CASES[case]
    layout = _layout(side)
    ids = random_ids(layout, seed=2)
    valid = layout.valid_mask()
    weights = loss_weights((*ids.shape, llama.config.vocab_size))
    with apply_reduction(llama, policies, sharing) as handle:
        _randomize_routers(llama)
        llama.train()
        states = capture_states(handle)
        got = run(llama, ids, layout)
        logit_loss(got, valid, weights).backward()
        got_grads, got_all = _router_grads(llama), _merged_grads(llama)
        llama.zero_grad(set_to_none=True)
        plan = handle.plan(layout)
        expected, roles = reference(llama, plan, layout, ids)
        logit_loss(expected, valid, weights).backward()
        want_grads, want_all = _router_grads(llama), _merged_grads(llama)
        llama.zero_grad(set_to_none=True)
        llama.eval()
    assert torch.equal(states[0].plan.roles.long(), roles), "executed picks differ"
    routed = {r.layer for r in plan.routes}
    capacity_one = case == "capacity_one"
    assert bool((roles[list(routed)] == Role.BYPASS).any()) != capacity_one
    assert rel_err(got, expected, valid) <= TOL
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name, grad in got_all.items():  # the routers' and every other weight's
        err = rel_err(grad, want_all[name])
        assert err <= 1e-9, f"{name}: rel err {err:.2e}"
    served = {r.task.name.lower() for r in plan.routes}
    for name, grad in got_grads.items():
        if name.split(".token_router.")[1].split(".")[0] in served:
            assert grad.abs().sum() > 0, f"{name}: no gradient reached the router"


def test_himix_rows_beside_a_router_equal_a_himix_only_run(llama):
    layout = _layout()
    ids = random_ids(layout, seed=4)
    und = layout.task_mask(Task.UNDERSTANDING)
    mixed = {"understanding": HiMix(start_layer=1), "generation": Router(capacity=0.5)}
    with apply_reduction(llama, mixed, "task") as handle:
        _randomize_routers(llama)
        got = run(llama, ids, layout)
        expected, _ = reference(llama, handle.plan(layout), layout, ids, rows=~und)
    gen_valid = layout.valid_mask() & ~und[:, None]
    assert rel_err(got, expected, gen_valid) <= TOL
    with apply_reduction(llama, {"understanding": HiMix(start_layer=1)}, "task"):
        himix_only = run(llama, ids, layout)
    und_valid = layout.valid_mask() & und[:, None]
    assert rel_err(got, himix_only, und_valid) <= TOL


def test_fresh_routers_change_nothing_at_capacity_one(llama):
    layout = _layout("left")
    ids = random_ids(layout, seed=6)
    plain = run(llama, ids, attention_mask=layout.valid_mask().long())
    with apply_reduction(llama, Router(capacity=1.0), "task"):
        got = run(llama, ids, layout)  # zero weights: gate 1, every candidate picked
    assert rel_err(got, plain, layout.valid_mask()) <= TOL


def test_routers_without_candidates_still_get_zero_grads(llama):
    """SPMD: a batch without generation samples still runs the generation routers."""
    layout = TokenLayout.from_spans([SPANS[0], SPANS[2]], ["understanding"] * 2)
    ids = random_ids(layout)
    with apply_reduction(llama, Router(capacity=0.5), "shared"):
        run(llama, ids, layout).sum().backward()
        grads = {n: p.grad for n, p in llama.named_parameters() if ".token_router." in n}
        llama.zero_grad(set_to_none=True)
    assert all(g is not None for g in grads.values())
    assert all(float(g.abs().sum()) == 0 for n, g in grads.items() if ".generation." in n)
    assert any(float(g.abs().sum()) > 0 for n, g in grads.items() if ".understanding." in n)


@pytest.mark.parametrize("checkpointing", ["reentrant", "non-reentrant"])
def test_checkpointing_and_unpacked_runs_equal_the_plain_routed_forward(checkpointing):
    layout = _layout("left")
    ids = random_ids(layout)
    results = []
    for ckpt, pack in ((None, True), (checkpointing, True), (checkpointing, False)):
        model = build_llama(LAYERS, seed=0)
        handle = apply_reduction(model, {"generation": Router(capacity=0.5)}, "modality")
        handle.pack_runs = pack
        _randomize_routers(model)
        model.train()
        if ckpt:
            kwargs = {"use_reentrant": ckpt == "reentrant"}
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        logits = run(model, ids, layout)
        logits.sum().backward()
        results.append((logits.detach(), _router_grads(model)))
    (l0, g0), *rest = results
    for logits, grads in rest:
        torch.testing.assert_close(logits, l0, rtol=1e-5, atol=1e-6)
        for name in g0:
            torch.testing.assert_close(grads[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)


#: Calls that read a device value on the host (as in test_step_schedule.py).
SYNCING = {"item", "tolist", "__bool__", "__int__", "nonzero", "bincount", "unique", "cpu"}


class _SyncRecorder(TorchFunctionMode):
    """Records (layer, call) for every synchronising call while active."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = -1
        self.calls: list[tuple[int, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING:
            self.calls.append((self.layer, name))
        return func(*args, **(kwargs or {}))


def test_one_read_back_per_routed_layer_and_none_elsewhere():
    model = build_llama(LAYERS, seed=0)
    handle = apply_reduction(model, Router(capacity=0.5, start_layer=1, end_layer=3), "task")
    layout = _layout()
    prepared = handle.prepare(layout, layout.valid_mask().long())  # on the host
    recorder = _SyncRecorder()
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, i=i: setattr(recorder, "layer", i))
        for i, layer in enumerate(model.model.layers)
    ]
    model.train()
    with recorder:
        logits = model(
            input_ids=random_ids(layout),
            attention_mask=layout.valid_mask().long(),
            tokred_layout=prepared,
            use_cache=False,
        ).logits
        recorder.layer = LAYERS  # the backward: no read-back at all
        logits.sum().backward()
    for h in hooks:
        h.remove()
    # Layer -1 is Hugging Face's own code before layer 0 (its mask preparation). From
    # layer 0 on: the routed layers 1 and 2 only, one copy of the roles to the host each.
    calls = [(layer, call) for layer, call in recorder.calls if layer >= 0]
    assert {layer for layer, _ in calls} == {1, 2}
    assert [layer for layer, call in calls if call == "cpu"] == [1, 2]


def test_router_errors_name_the_bad_value():
    model = build_llama(2, seed=0)
    with pytest.raises(TokredError, match="router start_layer=1 leaves no layer"):
        apply_reduction(model, Router(capacity=0.5), "shared")
    model = build_llama(LAYERS, seed=0)
    text_only = TokenLayout.from_spans(
        [[("system", 2), ("instruction", 3), ("output", 2)]], ["understanding"]
    )
    with apply_reduction(model, Router(capacity=0.5), "shared") as handle:
        with pytest.raises(TokredError, match="policy 'router' needs image tokens"):
            handle.prepare(text_only)

"""tokred_models.bench: each arm computes what its definition says, the shapes and cases
are read and refused in one line, and a result survives JSON. No speed is asserted:
timings are the benchmark's output, never a test's condition."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tokred_core import ReductionPlan, Role, TaskPolicies, TokenLayout, TokredError
from tokred_models import reduction_handle
from tokred_models.bench import (
    ARM_NAMES,
    BENCH_PRESETS,
    BenchBatch,
    BenchResult,
    BenchShape,
    Spread,
    efficiency,
    load_bench_shape,
    make_batch,
    open_arm,
    parse_cases,
    render_table,
    run_bench,
)
from tokred_models.bench.arms import (
    active_runs,
    masking_attention_mask,
    masking_loss,
    plain_loss,
    renumbered_loss,
    static_plan,
    tokred_loss,
)
from tokred_models.bench.cases import case_tasks
from tokred_models.bench.measure import head_training_flops
from tokred_models.bench.report import efficiency_series

TINY = BenchShape("tiny", 32, 64, 4, 4, 2, text_tokens=8, image_tokens=6, batch=2, vocab_size=64)
NONE = TaskPolicies()


@pytest.fixture(scope="module")
def model():
    return TINY.build_model()


def padded_batch() -> BenchBatch:
    """Three samples of different lengths (right padding), both tasks."""
    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("image", 6), ("instruction", 2), ("output", 3)],
            [("system", 1), ("instruction", 3), ("output", 5)],
            [("system", 1), ("image", 3), ("instruction", 1), ("output", 2)],
        ],
        ["understanding", "generation", "understanding"],
    )
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, TINY.vocab_size, layout.segments.shape, generator=gen)
    labels = torch.where(layout.target_mask(), ids, torch.full_like(ids, -100))
    return BenchBatch(ids, labels, layout.valid_mask().long(), layout)


def grads_of(model, loss_fn) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.parametrize("padded", [False, True], ids=["canonical", "padded"])
def test_every_arm_with_none_is_the_plain_model(model, padded):
    tasks = ["understanding", "generation"]
    batch = padded_batch() if padded else make_batch(tasks, 8, 6, TINY.vocab_size, "cpu")
    plan = static_plan(NONE, batch.layout, TINY.num_layers)
    ref_loss, ref_grads = grads_of(model, lambda: plain_loss(model, batch))
    for arm in (masking_loss, renumbered_loss):
        loss, grads = grads_of(model, lambda arm=arm: arm(model, batch, plan))
        assert loss == pytest.approx(ref_loss, rel=1e-5), arm.__name__
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    patched = copy.deepcopy(model)
    with open_arm("tokred", patched, NONE):
        assert tokred_loss(patched, batch).item() == pytest.approx(ref_loss, rel=1e-5)


def test_renumbered_gather_with_a_fixed_active_set_is_the_plain_model_on_those_tokens(model):
    # Image tokens gone from layer 0 on: the text alone, renumbered 0..n-1, through the
    # plain model (each output's predecessor is text, so the loss pairs are the same).
    layout = TokenLayout.from_spans(
        [
            [("system", 1), ("image", 4), ("instruction", 2), ("output", 2)],
            [("system", 2), ("image", 2), ("instruction", 1), ("output", 2)],
        ],
        ["understanding", "understanding"],
    )
    ids = torch.randint(
        0, TINY.vocab_size, layout.segments.shape, generator=torch.Generator().manual_seed(2)
    )
    labels = torch.where(layout.target_mask(), ids, torch.full_like(ids, -100))
    roles = torch.zeros(TINY.num_layers, *layout.segments.shape, dtype=torch.int8)
    roles.masked_fill_((layout.image_mask() | ~layout.valid_mask())[None], int(Role.DROPPED))
    batch = BenchBatch(ids, labels, layout.valid_mask().long(), layout)
    got = renumbered_loss(model, batch, ReductionPlan(roles)).item()
    text = layout.text_mask()
    ref = model(ids[text].view(2, 5), labels=labels[text].view(2, 5)).loss
    assert got == pytest.approx(ref.item(), rel=1e-5)


def test_masking_hides_the_keys_the_last_layer_does_not_attend_to():
    batch = padded_batch()
    layout = batch.layout
    fastv = TaskPolicies({"understanding": "fastv"})  # keeps half the image tokens
    plan = static_plan(fastv, layout, TINY.num_layers)
    mask = masking_attention_mask(plan, layout, torch.float32)[:, 0]
    last = plan.roles[-1]
    n = layout.seq_len
    for b in range(layout.batch_size):
        for q in range(n):
            for k in range(n):
                visible = last[b, k] in (Role.ACTIVE, Role.INJECT) and bool(
                    layout.valid_mask()[b, k]
                )
                allowed = k <= q and (visible or k == q)
                assert (mask[b, q, k] == 0) == allowed, (b, q, k)
    # FastV dropped half of each sample's image tokens, which are now hidden.
    assert int(((last == Role.DROPPED) & layout.image_mask()).sum()) == 3 + 1


def test_masking_keeps_inject_keys_so_himix_masks_nothing(model):
    batch = make_batch(["understanding"] * 2, 8, 6, TINY.vocab_size, "cpu")
    plan = static_plan(TaskPolicies({"understanding": "himix"}), batch.layout, TINY.num_layers)
    assert masking_loss(model, batch, plan).item() == pytest.approx(
        plain_loss(model, batch).item(), rel=1e-6
    )


def test_active_runs_split_where_the_active_set_changes():
    active = torch.ones(5, 1, 3, dtype=torch.bool)
    active[2, 0, 1] = False  # an hmgen-style shallow layer
    active[4:, 0, 2] = False  # a drop from layer 4 on
    assert active_runs(active) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert active_runs(torch.ones(3, 2, 2, dtype=torch.bool)) == [(0, 3)]


def test_open_arm_patches_only_for_its_duration(model):
    patched = copy.deepcopy(model)
    with open_arm("tokred", patched, NONE):
        assert reduction_handle(patched) is not None
    assert reduction_handle(patched) is None
    with pytest.raises(TokredError, match="unknown arm 'warp'"):
        with open_arm("warp", model, NONE):
            pass


def test_efficiency_formula():
    assert efficiency(0.5, 0.5) == pytest.approx(1.0)
    assert efficiency(1.0, 0.4) == pytest.approx(0.0)
    assert efficiency(1.2, 0.6) == pytest.approx(-0.5)
    assert efficiency(0.7, 0.3) == pytest.approx(0.3 / 0.7)
    assert efficiency(0.9, 1.0) is None


def test_spread():
    s = Spread.of([3.0, 1.0, 2.0, 4.0, 5.0])
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, 5.0, 5)
    assert s.q1 == pytest.approx(2.0) and s.q3 == pytest.approx(4.0)
    assert Spread.of([2.0]) == Spread(2.0, 2.0, 2.0, 2.0, 2.0, 1)


def test_presets_are_the_named_shapes():
    cb, demo, big = (BENCH_PRESETS[n] for n in ("compute-bound", "demo", "llama-1b"))
    assert (cb.hidden_size, cb.intermediate_size, cb.num_layers, cb.num_heads) == (
        1024,
        2816,
        4,
        16,
    )
    assert (cb.num_kv_heads, cb.text_tokens, cb.image_tokens, cb.batch) == (16, 64, 576, 2)
    assert (demo.hidden_size, demo.intermediate_size, demo.num_layers) == (128, 344, 4)
    assert (demo.num_heads, demo.num_kv_heads, demo.image_tokens, demo.batch) == (4, 2, 16, 16)
    assert (big.hidden_size, big.intermediate_size, big.num_layers) == (2048, 8192, 16)
    assert (big.num_heads, big.num_kv_heads, big.text_tokens, big.image_tokens) == (32, 8, 128, 576)
    assert big.batch == 4


HF = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
}


def test_a_shape_from_a_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**HF, "text_tokens": 10, "image_tokens": 5, "seq_lens": [30]}))
    shape = load_bench_shape(str(tmp_path))  # a folder holding config.json works too
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size) == (32, 3, 100)
    assert (shape.text_tokens, shape.image_tokens, shape.batch, shape.seq_lens) == (10, 5, 2, (30,))
    assert BenchShape.from_dict(json.loads(json.dumps(shape.to_dict()))) == shape


@pytest.mark.parametrize(
    "config, expected",
    [
        ({**HF, "text_tokens": "many"}, "text_tokens='many'"),
        ({**HF, "batch": 0}, "batch=0"),
        ({**HF, "batch": True}, "batch=True"),
        ({**HF, "image_tokens": 10**9}, "image_tokens=1000000000"),
        ({**HF, "seq_lens": 40}, "seq_lens=40 must be a list"),
        ({**HF, "text_tokens": 10, "seq_lens": [8]}, "seq_lens=8 must exceed the 10 text tokens"),
        ({k: v for k, v in HF.items() if k != "hidden_size"}, "'hidden_size'"),
        ({**HF, "num_attention_heads": 3}, "num_heads=3"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_bad_shape_config_is_one_line_naming_it(tmp_path, config, expected):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    with pytest.raises(TokredError) as err:
        load_bench_shape(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_and_broken_json(tmp_path):
    with pytest.raises(TokredError, match="'giant' is neither a preset"):
        load_bench_shape("giant")
    (tmp_path / "c.json").write_text("{bad")
    with pytest.raises(TokredError, match="is not valid JSON"):
        load_bench_shape(str(tmp_path / "c.json"))


def test_cases_pick_each_policy_s_task_and_fit_hmgen_to_the_stack():
    cases = parse_cases("himix,hmgen,himix+hmgen,fastv:keep_ratio=0.25", TINY)
    assert [(c.name, c.batch) for c in cases] == [
        ("himix", "understanding"),
        ("hmgen", "generation"),
        ("himix+hmgen", "mixed"),
        ("fastv:keep_ratio=0.25", "understanding"),
    ]
    # 4 layers fit one alternate shallow layer (the default 3 needs 7).
    plan = cases[1].policies.plan(make_batch(["generation"], 8, 6, 64, "cpu").layout, 4)
    assert [int((plan.roles[i] == Role.BYPASS).sum()) for i in range(4)] == [0, 6, 0, 0]
    assert case_tasks("mixed", 5) == ["understanding"] * 3 + ["generation"] * 2
    assert case_tasks("mixed", 1) == ["understanding", "generation"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("warp", "'warp'"),
        ("himix,,hmgen", "comma-separated"),
        ("himix+hmgen+fastv", "'himix+hmgen+fastv'"),
        ("hmgen+himix", "cannot serve generation"),
        ("himix,himix", "names 'himix' twice"),
        ("fastv:layer=9", "fastv:layer=9"),
        ("himix:start_layer=x", "start_layer='x'"),
    ],
)
def test_bad_policies_are_refused_in_one_line(text, expected):
    with pytest.raises(TokredError) as err:
        parse_cases(text, TINY)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_run_survives_json_and_renders(model):
    shape = TINY.replace(seq_lens=(18,))
    cases = parse_cases("himix+hmgen", shape)
    result = run_bench(shape, cases, warmup=0, repeats=1, command=["tokred", "bench"])
    data = json.loads(json.dumps(result.to_dict()))
    assert BenchResult.from_dict(data) == result
    (case,) = result.cases
    assert [a.arm for a in case.arms] == list(ARM_NAMES)
    assert 0 < case.flops_ratio < 1 and case.none.efficiency is None
    # Efficiency is taken against the step's FLOPs: the decoder's (the plan's) plus the LM
    # head's, 3 x 2 x positions x hidden x vocab in both arms.
    tasks = case_tasks("mixed", shape.batch)
    batch = make_batch(tasks, shape.text_tokens, shape.image_tokens, shape.vocab_size, "cpu")
    positions = batch.layout.batch_size * batch.layout.seq_len
    head = 6 * positions * shape.hidden_size * shape.vocab_size
    assert head_training_flops(batch, shape) == head
    assert case.flops_ratio < case.step_flops_ratio < 1
    tok = case.arm("tokred")
    assert tok.efficiency == pytest.approx(efficiency(tok.time_ratio.median, case.step_flops_ratio))
    # Memory on the CPU is the saved-tensor proxy: every arm saves something.
    assert all(a.memory and a.memory > 0 for a in [case.none, *case.arms])
    assert case.arm("masking-only").arm_flops_ratio == 1.0
    assert result.probe is not None and result.probe.ratio.n == 1
    assert [p.seq_len for p in result.sweep] == [18]
    assert set(efficiency_series(result)["himix+hmgen"]) == set(ARM_NAMES)
    assert {"machine", "command", "shape", "settings", "cases", "probe", "sweep"} <= set(data)
    assert data["machine"]["torch"] == torch.__version__
    table = render_table(result)
    for word in ("himix+hmgen", *ARM_NAMES, "probe", "tokens/sample"):
        assert word in table


def test_cuda_without_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(TokredError, match="--device cuda: CUDA is not available"):
        run_bench(TINY, parse_cases("himix", TINY), device="cuda")

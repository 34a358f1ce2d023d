"""position_attention: the torch reference, flex on CPU, the flash varlen plan, dispatch.

The oracle is the obvious eager float64 formulation, softmax(QK^T·scale + mask)·V with the
mask built from positions here, independently of the backends. The flash design is proven
without a GPU: its varlen plan, run through an explicit-mask emulation of flash's
bottom-right causal varlen attention, must equal the oracle.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import tokred_kernels as tk
import torch
from tokred_kernels import flash_varlen_impl, flex_attention_impl
from tokred_kernels.position_attention import position_attention as torch_position_attention
from tokred_kernels.varlen_runs import build_varlen_plan
from torch import Tensor


@dataclass
class Case:
    q: Tensor
    k: Tensor
    v: Tensor
    qp: Tensor
    kp: Tensor
    qv: Tensor
    kv: Tensor

    def args(self) -> tuple[Tensor, ...]:
        return self.q, self.k, self.v, self.qp, self.kp, self.qv, self.kv


def _inject_sample(g, nq: int, nk: int, n_active: int, n_inject: int):
    """Keys [ACTIVE (by position)..., INJECT (by position)..., pad]; queries ACTIVE, pad."""
    span = 2 * nk + 3
    chosen = torch.randperm(span, generator=g)[: n_active + n_inject]
    is_active = torch.zeros(n_active + n_inject, dtype=torch.bool)
    is_active[torch.randperm(n_active + n_inject, generator=g)[:n_active]] = True
    active = chosen[is_active].sort().values
    inject = chosen[~is_active].sort().values
    qp = torch.randint(0, span, (nq,), generator=g)  # padding positions are arbitrary
    kp = torch.randint(0, span, (nk,), generator=g)
    qp[:n_active] = active
    kp[: n_active + n_inject] = torch.cat([active, inject])
    return qp, kp, n_active, n_active + n_inject


def make_case(seed, b, h, hkv, nq, nk, d, layout="inject", dtype=torch.float64) -> Case:
    """Random inputs; sample 0 is full, the last sample is empty (all padding) when b > 1.

    'inject': queries are the ACTIVE tokens, keys ACTIVE then INJECT (positions
    interleaved), as in a reduced layer. 'random': random positions (duplicates, queries
    that are not keys, queries that see nothing) and random padding suffixes.
    """
    g = torch.Generator().manual_seed(seed)
    qps, kps, nqs, nks = [], [], [], []
    for i in range(b):
        if layout == "inject":
            n_act = nq if i == 0 else int(torch.randint(0, nq + 1, (1,), generator=g))
            n_act = min(n_act, nk)
            n_inj = int(torch.randint(0, nk - n_act + 1, (1,), generator=g))
            n_inj = nk - n_act if i == 0 else n_inj
            qp, kp, n_q, n_k = _inject_sample(g, nq, nk, n_act, n_inj)
        else:
            qp = torch.randint(0, nk + 2, (nq,), generator=g)
            kp = torch.randint(0, nk + 2, (nk,), generator=g)
            n_q = int(torch.randint(0, nq + 1, (1,), generator=g))
            n_k = int(torch.randint(0, nk + 1, (1,), generator=g))
        if b > 1 and i == b - 1:
            n_q, n_k = 0, (0 if layout == "inject" else n_k)
        qps.append(qp)
        kps.append(kp)
        nqs.append(n_q)
        nks.append(n_k)
    qv = torch.arange(nq)[None] < torch.tensor(nqs)[:, None]
    kv = torch.arange(nk)[None] < torch.tensor(nks)[:, None]
    q, k, v = (
        torch.randn(b, heads, n, d, generator=g, dtype=torch.float64).to(dtype)
        for heads, n in ((h, nq), (hkv, nk), (hkv, nk))
    )
    return Case(q, k, v, torch.stack(qps), torch.stack(kps), qv, kv)


def oracle(case: Case, scale: float, window: int | None = None) -> Tensor:
    """Eager float64 softmax(QK^T·scale + mask)·V; rows that see no key are 0."""
    rep = case.q.shape[1] // case.k.shape[1]
    k = case.k.double().repeat_interleave(rep, dim=1)
    v = case.v.double().repeat_interleave(rep, dim=1)
    rel = case.qp[:, :, None] - case.kp[:, None, :]
    vis = case.qv[:, :, None] & case.kv[:, None, :] & (rel >= 0)
    if window is not None:
        vis = vis & (rel < window)
    vis = vis[:, None]
    sees = vis.any(-1, keepdim=True)
    scores = case.q.double() @ k.transpose(-1, -2) * scale
    scores = torch.where(vis, scores, float("-inf"))
    scores = torch.where(sees, scores, 0.0)  # keep empty rows finite, zeroed below
    return (torch.softmax(scores, dim=-1) * sees) @ v


def _grads(fn, case: Case, out_grad: Tensor) -> tuple[Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_() for t in (case.q, case.k, case.v)]
    probe = Case(*leaves, case.qp, case.kp, case.qv, case.kv)
    out = fn(probe)
    (out.double() * out_grad).sum().backward()
    return (out.detach(), *(t.grad for t in leaves))


def _kwargs(case: Case, **extra):
    names = ("q", "k", "v", "q_positions", "k_positions", "q_valid", "k_valid")
    return dict(zip(names, case.args(), strict=True)) | {"scale": 0.5} | extra


CASES = [
    # seed, b, h, hkv, nq, nk, d, layout, window
    (0, 1, 1, 1, 1, 7, 16, "inject", None),
    (1, 3, 4, 2, 5, 9, 16, "inject", None),
    (2, 3, 4, 2, 6, 13, 8, "inject", 4),
    (3, 4, 4, 1, 7, 7, 5, "random", None),
    (4, 3, 2, 2, 9, 11, 16, "random", 3),
    (5, 2, 4, 4, 1, 1, 3, "inject", 1),
]


@pytest.mark.parametrize("seed,b,h,hkv,nq,nk,d,layout,window", CASES)
def test_torch_reference_matches_oracle_forward_and_backward(
    seed, b, h, hkv, nq, nk, d, layout, window
):
    case = make_case(seed, b, h, hkv, nq, nk, d, layout)
    scale = d**-0.5 * 1.3
    out_grad = torch.randn(
        b, h, nq, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )

    def run(c: Case) -> Tensor:
        return torch_position_attention(*c.args(), scale=scale, window=window)

    got = _grads(run, case, out_grad)
    want = _grads(lambda c: oracle(c, scale, window), case, out_grad)
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    pad = ~case.qv
    assert (got[0].transpose(1, 2)[pad] == 0).all()  # padding queries: exact zeros
    if b > 1:  # the last sample is empty: no gradient reaches its queries or keys
        assert (got[1][-1] == 0).all() and (got[2][-1] == 0).all()


def test_torch_reference_dtype_dropout_and_empty_lengths():
    case = make_case(7, 2, 4, 2, 5, 9, 16, dtype=torch.bfloat16)
    out = torch_position_attention(*case.args(), scale=0.25)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 5, 16)
    c32 = make_case(7, 2, 4, 2, 5, 9, 16, dtype=torch.float32)
    plain = torch_position_attention(*c32.args(), scale=0.25)
    torch.manual_seed(0)
    dropped = torch_position_attention(*c32.args(), scale=0.25, dropout=0.5)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, plain)
    assert (dropped.transpose(1, 2)[~c32.qv] == 0).all()
    empty = make_case(8, 2, 2, 2, 3, 4, 8)
    for nq, nk in ((0, 4), (3, 0)):
        q, k = empty.q[:, :, :nq], empty.k[:, :, :nk]
        qp, kp, qv, kv = empty.qp[:, :nq], empty.kp[:, :nk], empty.qv[:, :nq], empty.kv[:, :nk]
        out = torch_position_attention(q, k, k, qp, kp, qv, kv, scale=1.0)
        assert out.shape == (2, 2, nq, 8) and (out == 0).all()


def test_input_mistakes_raise_kernel_error():
    c = make_case(9, 2, 4, 2, 3, 5, 8)
    with pytest.raises(tk.KernelError, match="multiple of kv heads"):
        torch_position_attention(c.q[:, :3], c.k, c.v, *c.args()[3:], scale=1.0)
    with pytest.raises(tk.KernelError, match="window must be >= 1"):
        torch_position_attention(*c.args(), scale=1.0, window=0)
    with pytest.raises(tk.KernelError, match="q_positions must be an integer"):
        torch_position_attention(c.q, c.k, c.v, c.qp.double(), *c.args()[4:], scale=1.0)
    with pytest.raises(tk.KernelError, match="k_valid must be bool"):
        torch_position_attention(*c.args()[:6], c.kv.long(), scale=1.0)


# --- flex ------------------------------------------------------------------------------------

FLEX_CASES = [
    (10, 1, 1, 1, 1, 7, 16, "inject", None),
    (11, 3, 4, 2, 5, 11, 16, "inject", 4),
    (12, 3, 2, 1, 6, 9, 8, "random", None),
]


@pytest.mark.parametrize("seed,b,h,hkv,nq,nk,d,layout,window", FLEX_CASES)
def test_flex_cpu_forward_matches_reference(seed, b, h, hkv, nq, nk, d, layout, window):
    """Eager flex (no torch.compile) runs forward on CPU; every row matches, pads are 0."""
    case = make_case(seed, b, h, hkv, nq, nk, d, layout, dtype=torch.float32)
    case.q.requires_grad_()  # a leaf that wants grad: fine under no_grad (inputs detached)
    with torch.no_grad():
        got = flex_attention_impl.flex_position_attention(*case.args(), scale=0.3, window=window)
        want = torch_position_attention(*case.args(), scale=0.3, window=window)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_flex_reasons():
    c = make_case(13, 2, 4, 2, 3, 5, 16, dtype=torch.float32)
    kwargs = _kwargs(c)
    flex = flex_attention_impl.FLEX_IMPL
    assert flex.not_supported_reasons("position_attention", **kwargs) == []
    kwargs["q"] = c.q.clone().requires_grad_()
    reasons = flex.not_supported_reasons("position_attention", **kwargs, dropout=0.1)
    assert any("no CPU backward" in r for r in reasons)
    assert any("dropout" in r for r in reasons)
    with torch.no_grad():
        assert flex.not_supported_reasons("position_attention", **kwargs) == []
    kwargs["k"], kwargs["v"] = c.k[:, :, :0], c.v[:, :, :0]
    reasons = flex.not_supported_reasons("position_attention", **kwargs)
    assert any("empty query or key length" in r for r in reasons)
    assert flex.not_supported_reasons("token_index", mask=c.qv) == [
        "op 'token_index' is not implemented yet by 'flex'"
    ]


# --- flash: the varlen plan, proven on CPU ---------------------------------------------------


def emulated_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, dropout_p, softmax_scale, causal):
    """flash_attn_varlen_func's semantics with explicit masks: per sequence, GQA, causal
    bottom-right aligned (query r of Lq sees keys [0, r + Lk - Lq])."""
    assert causal and dropout_p == 0.0
    assert cu_q.dtype == cu_k.dtype == torch.int32 and cu_q.numel() == cu_k.numel()
    rep = q.shape[1] // k.shape[1]
    outs = []
    for s in range(cu_q.numel() - 1):
        qs = q[cu_q[s] : cu_q[s + 1]]
        ks = k[cu_k[s] : cu_k[s + 1]].repeat_interleave(rep, dim=1)
        vs = v[cu_k[s] : cu_k[s + 1]].repeat_interleave(rep, dim=1)
        lq, lk = qs.shape[0], ks.shape[0]
        assert 0 < lq <= max_q and 0 < lk <= max_k
        allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + lk - lq
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * softmax_scale
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        outs.append(torch.einsum("hqk,khd->qhd", probs, vs))
    return torch.cat(outs)


def _runs_by_hand(case: Case, i: int) -> int:
    """Maximal groups of valid queries that see consecutive prefixes of the sorted keys."""
    keys = sorted(p for p, ok in zip(case.kp[i].tolist(), case.kv[i].tolist(), strict=True) if ok)
    lasts = sorted(
        sum(kp <= p for kp in keys) - 1
        for p, ok in zip(case.qp[i].tolist(), case.qv[i].tolist(), strict=True)
        if ok and any(kp <= p for kp in keys)
    )
    return sum(1 for j, e in enumerate(lasts) if j == 0 or e != lasts[j - 1] + 1)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("layout", ["inject", "random"])
def test_varlen_plan_emulated_equals_reference(seed, layout):
    g = torch.Generator().manual_seed(100 + seed)
    b, hkv = (
        int(torch.randint(1, 4, (1,), generator=g)),
        int(torch.randint(1, 3, (1,), generator=g)),
    )
    nq, nk = (
        int(torch.randint(1, 9, (1,), generator=g)),
        int(torch.randint(1, 14, (1,), generator=g)),
    )
    case = make_case(seed, b, 2 * hkv, hkv, nq, nk, 8, layout)
    plan = build_varlen_plan(case.qp, case.kp, case.qv, case.kv)
    assert plan.num_runs == sum(_runs_by_hand(case, i) for i in range(b))
    assert plan.q_rows.unique().numel() == plan.q_rows.numel()  # each query in one run
    assert (
        plan.cu_seqlens_q[-1] == plan.q_rows.numel()
        and plan.cu_seqlens_k[-1] == plan.k_rows.numel()
    )
    rows_q = plan.q_rows // nq
    rows_k = plan.k_rows // nk
    for s in range(plan.num_runs):  # a run never mixes samples
        qs, ks = plan.cu_seqlens_q[s : s + 2].tolist(), plan.cu_seqlens_k[s : s + 2].tolist()
        assert rows_q[qs[0] : qs[1]].unique().numel() == 1
        assert (rows_k[ks[0] : ks[1]] == rows_q[qs[0]]).all()

    def via_plan(c: Case) -> Tensor:
        flash_varlen_impl._check_plan(plan, c.q, c.k)
        return flash_varlen_impl.flash_position_attention(*c.args(), scale=0.4, varlen_plan=plan)

    out_grad = torch.randn(b, 2 * hkv, nq, 8, generator=g, dtype=torch.float64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flash_varlen_impl, "_varlen_func", lambda: emulated_varlen)
        got = _grads(via_plan, case, out_grad)
    want = _grads(lambda c: oracle(c, 0.4), case, out_grad)
    for g_, w in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w, rtol=1e-9, atol=1e-10)


def test_varlen_plan_of_active_inject_keys():
    """Keys [ACTIVE 0 1 2 5 6 | INJECT 3 4 7]: queries 0-2 are one run, 5-6 another."""
    kp = torch.tensor([[0, 1, 2, 5, 6, 3, 4, 7, 0, 0]])
    kv = torch.tensor([[True] * 8 + [False] * 2])
    qp = torch.tensor([[0, 1, 2, 5, 6, 9]])
    qv = torch.tensor([[True] * 5 + [False]])
    # The callers' precondition (every valid query is a valid key at its own position)
    # holds here; it makes runs long, and the CPU check of it is this cheap:
    keys = {p for p, ok in zip(kp[0].tolist(), kv[0].tolist(), strict=True) if ok}
    assert all(p in keys for p, ok in zip(qp[0].tolist(), qv[0].tolist(), strict=True) if ok)
    plan = build_varlen_plan(qp, kp, qv, kv)
    assert plan.q_rows.tolist() == [0, 1, 2, 3, 4]
    assert plan.cu_seqlens_q.tolist() == [0, 3, 5] and plan.cu_seqlens_k.tolist() == [0, 3, 10]
    assert plan.k_rows.tolist() == [0, 1, 2] + [0, 1, 2, 5, 6, 3, 4]  # prefix up to pos 6
    assert (plan.max_seqlen_q, plan.max_seqlen_k) == (3, 7)


def test_flash_reasons_on_this_machine(monkeypatch):
    monkeypatch.setattr(flash_varlen_impl, "flash_attn_version", lambda: None)
    c = make_case(14, 1, 2, 1, 2, 3, 320, dtype=torch.float32)
    reasons = flash_varlen_impl.FLASH_IMPL.not_supported_reasons(
        "position_attention", q=c.q, k=c.k, v=c.v, window=4
    )
    text = "\n".join(reasons)
    for needle in (
        "flash_attn is not installed",
        "'q' is on cpu",
        "float16 or bfloat16",
        "head dim 320 > 256",
        "window is set",
    ):
        assert needle in text
    if not torch.cuda.is_available():
        assert "no CUDA device" in text


# --- dispatch --------------------------------------------------------------------------------


def test_dispatch_order_and_auto_on_cpu_picks_torch(monkeypatch):
    monkeypatch.delenv(tk.IMPL_ENV_VAR, raising=False)
    names = [i.name for i in tk.implementations()]
    assert names[:2] == ["flash", "flex"] and names[-1] == "torch"
    c = make_case(15, 2, 4, 2, 3, 6, 16, dtype=torch.float32)
    c.q.requires_grad_()
    assert tk.select_implementation("position_attention", **_kwargs(c)).name == "torch"
    out = tk.position_attention(*c.args(), scale=0.5)
    out.sum().backward()  # torch ran: CPU backward works
    assert torch.isfinite(c.q.grad).all()
    with torch.no_grad():  # flex could run, but auto passes its slow CPU path over
        assert tk.select_implementation("position_attention", **_kwargs(c)).name == "torch"


def test_explicit_backends_that_cannot_run_give_every_reason(monkeypatch):
    monkeypatch.setattr(flash_varlen_impl, "flash_attn_version", lambda: None)
    c = make_case(16, 2, 4, 2, 3, 6, 16, dtype=torch.float32)
    c.q.requires_grad_()
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "flex")
    with pytest.raises(tk.KernelError) as err:
        tk.position_attention(*c.args(), scale=0.5, dropout=0.1)
    assert "no CPU backward" in str(err.value) and "dropout" in str(err.value)
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "flash")
    with pytest.raises(tk.KernelError) as err:
        tk.position_attention(*c.args(), scale=0.5)
    msg = str(err.value)
    assert "flash_attn is not installed" in msg and "'q' is on cpu" in msg and "float32" in msg


def test_explicit_flex_runs_forward_on_cpu(monkeypatch):
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "flex")
    c = make_case(17, 2, 4, 2, 3, 6, 16, dtype=torch.float32)
    with torch.no_grad():
        got = tk.position_attention(*c.args(), scale=0.5, window=2)
        want = torch_position_attention(*c.args(), scale=0.5, window=2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_import_and_cpu_auto_never_import_flash_or_dynamo():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["flash_attn"] = None  # any `import flash_attn` now raises ImportError
        import torch
        import tokred_kernels as tk
        q = torch.randn(1, 2, 3, 8, requires_grad=True)
        pos = torch.arange(3)[None]
        ok = torch.ones(1, 3, dtype=torch.bool)
        tk.position_attention(q, q, q, pos, pos, ok, ok, scale=0.3).sum().backward()
        loaded = [m for m in ("flash_attn", "torch._dynamo", "torch.nn.attention.flex_attention")
                  if sys.modules.get(m) is not None]
        assert not loaded, loaded
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# --- GPU -------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cuda(case: Case, dtype: torch.dtype) -> Case:
    return Case(
        *(t.cuda().to(dtype) for t in (case.q, case.k, case.v)),
        *(t.cuda() for t in (case.qp, case.kp, case.qv, case.kv)),
    )


def _check_against_oracle(fn, case: Case, window: int | None) -> None:
    """fn's outputs and grads are as close to the float64 oracle as the reference's (x2)."""
    out_grad = torch.randn(*case.q.shape, device="cuda", dtype=torch.float64)
    want = _grads(lambda c: oracle(c, 0.125, window), case, out_grad)
    ref = _grads(
        lambda c: torch_position_attention(*c.args(), scale=0.125, window=window), case, out_grad
    )
    got = _grads(fn, case, out_grad)
    for g_, r, w in zip(got, ref, want, strict=True):
        assert (g_.double() - w).abs().max() <= 2 * (r.double() - w).abs().max() + 1e-4


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(flash_varlen_impl.flash_attn_version() is None, reason="needs flash_attn")
def test_flash_on_cuda_matches_reference():
    case = _cuda(make_case(18, 3, 8, 2, 37, 70, 64), torch.bfloat16)
    flash = flash_varlen_impl.FLASH_IMPL
    assert flash.not_supported_reasons("position_attention", **_kwargs(case)) == []
    _check_against_oracle(
        lambda c: flash.ops["position_attention"](*c.args(), scale=0.125), case, None
    )


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("window", [None, 16])
def test_flex_on_cuda_matches_reference_forward_and_backward(window):
    case = _cuda(make_case(19, 3, 8, 2, 37, 70, 64), torch.float32)
    flex = flex_attention_impl.flex_position_attention
    _check_against_oracle(lambda c: flex(*c.args(), scale=0.125, window=window), case, window)

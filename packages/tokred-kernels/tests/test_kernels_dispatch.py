"""The dispatcher: env var choices, auto fallback, explicit refusal with reasons, import safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import tokred_kernels as tk
import torch
from tokred_kernels import dispatch, triton_impl
from tokred_kernels.implementation import OP_NAMES


def _inputs():
    return {
        "q": torch.randn(1, 2, 3, 4),
        "k": torch.randn(1, 2, 3, 4),
        "key_segments": torch.zeros(1, 3, dtype=torch.long),
        "num_segments": 2,
    }


def test_default_is_auto_and_picks_torch_on_cpu(monkeypatch):
    monkeypatch.delenv(tk.IMPL_ENV_VAR, raising=False)
    assert tk.requested_implementation() == "auto"
    assert tk.select_implementation("segment_attention_mass", **_inputs()).name == "torch"


@pytest.mark.parametrize("value", ["torch", "TORCH", " torch "])
def test_env_torch(monkeypatch, value):
    monkeypatch.setenv(tk.IMPL_ENV_VAR, value)
    assert tk.requested_implementation() == "torch"
    out = tk.segment_attention_mass(**_inputs())
    assert out.shape == (1, 2, 3, 2)


def test_auto_order_tries_the_fused_backends_before_torch():
    assert [i.name for i in tk.implementations()] == ["flash", "flex", "triton", "torch"]


def test_invalid_env_value_raises_value_error(monkeypatch):
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "cuda")
    with pytest.raises(ValueError, match=r"'cuda'.*auto, flash, flex, triton, torch"):
        tk.segment_attention_mass(**_inputs())


def test_explicit_triton_on_cpu_raises_with_every_reason(monkeypatch):
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "triton")
    monkeypatch.setattr(triton_impl, "triton_importable", lambda: False)
    with pytest.raises(tk.KernelError) as err:
        tk.segment_attention_mass(**_inputs())
    msg = str(err.value)
    assert "not implemented yet" in msg
    assert "triton is not importable" in msg
    assert "'q' is on cpu" in msg and "'k' is on cpu" in msg
    if not torch.cuda.is_available():
        assert "no CUDA device" in msg
    assert "auto" in msg  # says how to fall back


def test_triton_reasons_for_gather_name_token_index(monkeypatch):
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "triton")
    idx = dispatch.TORCH_IMPL.ops["token_index"](mask=torch.ones(1, 2, dtype=torch.bool))
    reasons = triton_impl.TRITON_IMPL.not_supported_reasons(
        "gather_packed", x=torch.zeros(1, 2, 3), idx=idx
    )
    assert any("'idx' is on cpu" in r for r in reasons)
    with pytest.raises(tk.KernelError, match="gather_packed"):
        tk.gather_packed(torch.zeros(1, 2, 3), idx)


def test_every_op_is_routed_and_torch_implements_all():
    assert set(dispatch.TORCH_IMPL.ops) == set(OP_NAMES)
    for op in OP_NAMES:
        assert hasattr(tk, op) and op in tk.__all__


def test_auto_prefers_a_capable_earlier_implementation(monkeypatch):
    """The mechanism is real: a registered implementation that can run is picked first."""
    monkeypatch.setattr(dispatch, "_IMPLEMENTATIONS", list(dispatch._IMPLEMENTATIONS))
    calls = []

    def fake(**kwargs):
        calls.append(sorted(kwargs))
        return "fake-result"

    fake_impl = tk.Implementation(name="fake", ops={"topk_per_sample": fake})
    tk.register_implementation(fake_impl, before="triton")
    monkeypatch.delenv(tk.IMPL_ENV_VAR, raising=False)
    scores = torch.zeros(1, 3)
    cand = torch.ones(1, 3, dtype=torch.bool)
    assert tk.topk_per_sample(scores, cand, torch.tensor([1])) == "fake-result"
    assert calls == [["candidate_mask", "keep", "scores"]]
    # Ops it does not implement fall through to torch.
    assert tk.select_implementation("token_index", mask=cand).name == "torch"
    monkeypatch.setenv(tk.IMPL_ENV_VAR, "fake")
    with pytest.raises(tk.KernelError, match="not implemented yet by 'fake'"):
        tk.token_index(cand)


def test_unknown_op_and_impl_argument():
    with pytest.raises(tk.KernelError, match="unknown op"):
        tk.select_implementation("softmax")
    with pytest.raises(tk.KernelError, match="unknown implementation"):
        tk.select_implementation(
            "token_index", impl="cuda", mask=torch.ones(1, 1, dtype=torch.bool)
        )
    assert tk.select_implementation("token_index", impl="torch", mask=None).name == "torch"


@pytest.mark.slow
def test_import_is_safe_without_triton_and_imports_nothing_heavy():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # any `import triton` now raises ImportError
        import torch
        import tokred_kernels as tk
        heavy = [m for m in ("triton", "transformers", "peft", "bitsandbytes")
                 if sys.modules.get(m) is not None]
        assert not heavy, heavy
        from tokred_kernels import triton_impl
        assert triton_impl.triton_importable() is False
        q = torch.randn(1, 1, 2, 4)
        out = tk.segment_attention_mass(q, q, torch.zeros(1, 2, dtype=torch.long), 1)
        assert out.shape == (1, 1, 2, 1)
        reasons = triton_impl.TRITON_IMPL.not_supported_reasons("token_index", mask=q)
        assert any("not importable" in r for r in reasons), reasons
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_auto_passes_flex_over_while_the_dense_mask_is_small():
    """On a GPU `auto` leaves small masks to the torch reference (measured faster there) and
    takes flex once the dense mask would be large; naming flex still runs it. Meta tensors
    stand in for device ones: the rule reads shapes and devices only."""
    from tokred_kernels.flex_attention_impl import FLEX_AUTO_MIN_MASK, FLEX_IMPL

    def inputs(b, nq, nk, device="meta"):
        q = torch.empty(b, 8, nq, 64, device=device)
        kv = torch.empty(b, 2, nk, 64, device=device)
        return {"q": q, "k": kv, "v": kv, "dropout": 0.0}

    small = FLEX_IMPL.auto_skip_reasons("position_attention", **inputs(4, 704, 704))
    assert len(small) == 1 and "dense mask of 1982464 entries" in small[0]
    side = int(FLEX_AUTO_MIN_MASK**0.5)
    assert FLEX_IMPL.auto_skip_reasons("position_attention", **inputs(1, side, side)) == []
    cpu = FLEX_IMPL.auto_skip_reasons("position_attention", **inputs(1, 8, 8, "cpu"))
    assert "eager CPU path" in cpu[0]
    assert FLEX_IMPL.auto_skip_reasons("segment_attention_mass", **inputs(1, 8, 8)) == []

"""RMSNorm: reference vs transformers' Qwen2RMSNorm; Triton kernel vs reference.

On CPU the kernel runs in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5 shapes.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.rmsnorm import rmsnorm, rmsnorm_reference  # noqa: E402
from deepretrieval.kernels.rmsnorm_triton import rmsnorm_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    w = 1 + 0.1 * torch.randn(shape[-1], generator=g)
    r = torch.randn(shape, generator=g)
    return x.to(device, dtype), w.to(device, dtype), r.to(device, dtype)


def test_reference_equals_transformers_qwen2_rmsnorm_bf16():
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
    x, w, r = _inputs((4, 7, 64), torch.bfloat16, "cpu")
    hf = Qwen2RMSNorm(64, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        hf.weight.copy_(w)
        torch.testing.assert_close(rmsnorm_reference(x, w, 1e-6), hf(x), atol=0, rtol=0)
        normed, new_res = rmsnorm_reference(x, w, 1e-6, residual=r)
        torch.testing.assert_close(new_res, x + r, atol=0, rtol=0)
        torch.testing.assert_close(normed, hf(x + r), atol=0, rtol=0)


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 96), (2, 40)])
def test_triton_equals_reference_fp32_small(shape, with_residual):
    x, w, r = _inputs(shape, torch.float32, DEVICE)
    residual = r if with_residual else None
    got = rmsnorm_triton(x, w, 1e-6, residual)
    want = rmsnorm_reference(x, w, 1e-6, residual)
    if with_residual:
        torch.testing.assert_close(got[1], want[1], atol=0, rtol=0)
        got, want = got[0], want[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_triton_rejects_mismatched_residual():
    x, w, r = _inputs((2, 32), torch.float32, DEVICE)
    with pytest.raises(ValueError, match="residual"):
        rmsnorm_triton(x, w, 1e-6, r[:, :16])


def test_dispatcher_keeps_autograd_through_the_reference():
    x, w, _ = _inputs((2, 32), torch.float32, DEVICE)
    w.requires_grad_(True)
    rmsnorm(x, w, 1e-6).sum().backward()          # the Triton kernel has no backward
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hidden", [896, 2048])                   # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("rows", [1, 64, 128, 4096])             # decode batches and a prefill
def test_triton_equals_reference_gpu(dtype, hidden, rows):
    x, w, r = _inputs((rows, hidden), dtype, "cuda", seed=rows + hidden)
    with torch.no_grad():
        got = rmsnorm(x, w, 1e-6)                                  # dispatches to Triton
        got_fused, got_res = rmsnorm(x, w, 1e-6, residual=r)
        want = rmsnorm_reference(x, w, 1e-6)
        want_fused, want_res = rmsnorm_reference(x, w, 1e-6, residual=r)
    torch.testing.assert_close(got_res, want_res, atol=0, rtol=0)   # the add rounds as torch's
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    for g, wnt in ((got, want), (got_fused, want_fused)):
        torch.testing.assert_close(g, wnt, **tol)
        if dtype == torch.bfloat16:
            # same rounding points as the reference: only a rare 1-ulp flip from the fp32 sum order
            assert (g == wnt).float().mean().item() >= 0.99

"""Fused decode linear (kernels/fused_linear.py): the reference against the unfused ops it
replaces, the Triton kernel against the reference.

    python -m pytest -q tests/test_kernels_fused_linear.py            # CPU: Triton interpreter, fp32
    python -m pytest -q -m gpu tests/test_kernels_fused_linear.py     # CUDA: Qwen2.5-0.5B/3B shapes

In bf16 the kernel sums in another order than cuBLAS, so an output may round to the neighbouring
bf16 value: on the GPU both are compared with an fp64 computation from the same bf16 inputs,
and the kernel must be as close to it as the reference is (the same calibration as the other
kernel tests).
"""
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.fused_linear import fused_linear, fused_linear_reference  # noqa: E402
from deepretrieval.kernels.fused_linear_triton import LinearConfig, fused_linear_triton  # noqa: E402
from deepretrieval.kernels.rmsnorm import rmsnorm_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-6


def layer_cases(rows, C, F_, q_size, kv_size, vocab, dtype, device, seed=0):
    """The four calls of a decode layer plus the LM head, with random inputs: name -> (args, kwargs)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=g)).to(device, dtype)

    x, nw = t(rows, C), t(C, scale=0.1, offset=1.0)
    return {
        "qkv+norm+bias": ((x, (t(q_size, C, scale=0.05), t(kv_size, C, scale=0.05), t(kv_size, C, scale=0.05)),
                           (t(q_size, scale=0.1), t(kv_size, scale=0.1), t(kv_size, scale=0.1))),
                          dict(norm_weight=nw, eps=EPS)),
        "o+residual": ((t(rows, q_size), (t(C, q_size, scale=0.05),)), dict(residual=x)),
        "gate_up+norm+silu": ((x, (t(F_, C, scale=0.05), t(F_, C, scale=0.05))),
                              dict(norm_weight=nw, eps=EPS, silu_mul=True)),
        "down+residual": ((t(rows, F_), (t(C, F_, scale=0.05),)), dict(residual=x)),
        "head+norm+fp32": ((x, (t(vocab, C, scale=0.05),)), dict(norm_weight=nw, eps=EPS, out_float=True)),
    }


def test_reference_equals_the_unfused_layer_ops():
    """What the decoder's fused calls replace: RMSNorm, three nn.Linear + cat, SwiGLU, residual adds."""
    cases = layer_cases(3, 32, 48, 32, 16, 100, torch.bfloat16, "cpu")
    (x, ws, bs), kw = cases["qkv+norm+bias"]
    h = rmsnorm_reference(x, kw["norm_weight"], EPS)
    want = torch.cat([F.linear(h, w, b) for w, b in zip(ws, bs)], -1)
    assert torch.equal(fused_linear_reference(x, ws, bs, **kw), want)
    (x, ws), kw = cases["gate_up+norm+silu"]
    h = rmsnorm_reference(x, kw["norm_weight"], EPS)
    assert torch.equal(fused_linear_reference(x, ws, **kw), F.silu(F.linear(h, ws[0])) * F.linear(h, ws[1]))
    (y, ws), kw = cases["down+residual"]
    assert torch.equal(fused_linear_reference(y, ws, **kw), kw["residual"] + F.linear(y, ws[0]))
    (x, ws), kw = cases["head+norm+fp32"]
    got = fused_linear_reference(x, ws, **kw)
    assert got.dtype == torch.float32
    assert torch.equal(got, F.linear(rmsnorm_reference(x, kw["norm_weight"], EPS), ws[0]).float())


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("name", ["qkv+norm+bias", "o+residual", "gate_up+norm+silu", "down+residual",
                                  "head+norm+fp32"])
def test_triton_equals_reference_fp32_small(name, rows):
    # odd sizes: K and N not multiples of the blocks, segments that end mid-block
    args, kw = layer_cases(rows, 40, 72, 48, 24, 200, torch.float32, DEVICE)[name]
    want = fused_linear_reference(*args, **kw)
    for config in (LinearConfig(16, 32), LinearConfig(32, 16)):
        got = fused_linear_triton(*args, **kw, config=config)
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_triton_rejects_what_it_cannot_run():
    (x, ws, bs), kw = layer_cases(2, 32, 48, 32, 16, 100, torch.float32, DEVICE)["qkv+norm+bias"]
    with pytest.raises(ValueError, match="at most 16 rows"):
        fused_linear_triton(x.repeat(9, 1), ws, bs, **kw)
    with pytest.raises(ValueError, match="does not fit"):
        fused_linear_triton(x[:, :16], ws, bs, **kw)
    with pytest.raises(ValueError, match="exactly 2 with silu_mul"):
        fused_linear_triton(x, ws, silu_mul=True)
    with pytest.raises(ValueError, match="every weight or for none"):
        fused_linear_triton(x, ws, (bs[0], None, bs[2]), **kw)
    with pytest.raises(ValueError, match="block_n 4 < 16"):
        fused_linear_triton(x, ws, bs, **kw, config=LinearConfig(4, 32))


def test_dispatcher_keeps_autograd_through_the_reference():
    (x, ws), kw = layer_cases(2, 32, 48, 32, 16, 100, torch.float32, DEVICE)["down+residual"]
    w = ws[0].clone().requires_grad_(True)
    fused_linear(x, (w,), **kw).sum().backward()        # the Triton kernel has no backward
    assert w.grad is not None and torch.isfinite(w.grad).all()


def _fp64(args, kw):
    """The same computation in fp64 from the same (rounded) inputs: the yardstick for bf16."""
    x, ws, *rest = args
    bs = rest[0] if rest else None
    kw64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items() if k != "out_float"}
    return fused_linear_reference(x.double(), tuple(w.double() for w in ws),
                                  None if bs is None else tuple(b.double() for b in bs), **kw64)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 2, 16])
@pytest.mark.parametrize("shape", ["0.5b", "3b"])
def test_triton_equals_reference_gpu(shape, rows, dtype):
    dims = {"0.5b": (896, 4864, 14 * 64, 2 * 64), "3b": (2048, 11008, 16 * 128, 2 * 128)}[shape]
    for name, (args, kw) in layer_cases(rows, *dims, 151936, dtype, "cuda", seed=rows).items():
        with torch.no_grad():
            got = fused_linear(*args, **kw)                        # dispatches to Triton
            want = fused_linear_reference(*args, **kw)
        assert got.shape == want.shape and got.dtype == want.dtype
        if dtype == torch.float32:
            torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4, msg=name)
            continue
        truth = _fp64(args, kw)
        err_got, err_want = (got.double() - truth).abs(), (want.double() - truth).abs()
        assert err_got.max() <= 2 * err_want.max() + 1e-6, (name, err_got.max().item(), err_want.max().item())
        assert err_got.mean() <= 1.5 * err_want.mean() + 1e-6, (name, err_got.mean().item(), err_want.mean().item())

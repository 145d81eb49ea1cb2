"""qkv projection + RoPE + KV-cache write (kernels/qkv_rope_cache.py): the reference is the two
kernels it fuses; the Triton kernel equals it (CPU interpreter in fp32; on the GPU at Qwen2.5
shapes, against the two Triton kernels it replaces, within one bf16 rounding)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.fused_linear import fused_linear, fused_linear_reference  # noqa: E402
from deepretrieval.kernels.qkv_rope_cache import qkv_rope_cache, qkv_rope_cache_reference  # noqa: E402
from deepretrieval.kernels.qkv_rope_cache_triton import qkv_rope_cache_triton  # noqa: E402
from deepretrieval.kernels.rope_cache import rope_cache, rope_cache_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(B, K, H, H_kv, D, S, dtype, device, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device, dtype)

    x = t(B, K)
    weights = (t(H * D, K, scale=K ** -0.5), t(H_kv * D, K, scale=K ** -0.5), t(H_kv * D, K, scale=K ** -0.5))
    biases = (t(H * D), t(H_kv * D), t(H_kv * D)) if bias else None
    norm_weight = 1 + 0.1 * t(K)
    angles = torch.arange(S)[:, None].double() * torch.rand(D // 2, generator=g).double()
    cos = torch.cat([angles.cos()] * 2, -1).float().to(device)
    sin = torch.cat([angles.sin()] * 2, -1).float().to(device)
    positions = torch.randint(0, S, (B,), generator=g).to(device)
    caches = [t(B, H_kv, S, D) for _ in range(2)]
    slot = torch.tensor([S // 3], device=device)
    return x, weights, biases, norm_weight, 1e-6, cos, sin, positions, caches, slot


def call(fn, args, caches):
    x, weights, biases, norm_weight, eps, cos, sin, positions, _, slot = args
    return fn(x, weights, biases, norm_weight, eps, cos, sin, positions, caches[0], caches[1], slot)


def test_reference_is_fused_linear_then_rope_cache():
    args = inputs(2, 24, 4, 2, 8, 10, torch.float32, "cpu")
    x, weights, biases, nw, eps, cos, sin, pos, (kc, vc), slot = args
    kc2, vc2 = kc.clone(), vc.clone()
    got = call(qkv_rope_cache_reference, args, (kc, vc))
    qkv = fused_linear_reference(x, weights, biases, norm_weight=nw, eps=eps)
    q, k, v = qkv.split((32, 16, 16), dim=-1)
    want = rope_cache_reference(q.view(2, 4, 8), k.view(2, 2, 8), v.view(2, 2, 8), cos, sin, pos, kc2, vc2, slot)
    assert torch.equal(got, want) and torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.parametrize("B,D,bias", [(1, 16, True), (1, 32, False), (3, 32, True)])
def test_triton_equals_reference_fp32_small(B, D, bias):
    args = inputs(B, 40, 6, 2, D, 12, torch.float32, DEVICE, bias=bias)
    caches_want = [c.clone() for c in args[8]]
    want = call(qkv_rope_cache_reference, args, caches_want)
    caches_got = [c.clone() for c in args[8]]
    got = call(qkv_rope_cache_triton, args, caches_got)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(caches_got, caches_want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    others = [i for i in range(12) if i != args[9].item()]
    assert torch.equal(caches_got[0][:, :, others], args[8][0][:, :, others])   # only the slot is written


def test_triton_rejects_weights_that_do_not_fit_the_cache():
    x, weights, biases, nw, eps, cos, sin, pos, (kc, vc), slot = inputs(1, 16, 4, 2, 16, 8, torch.float32, DEVICE)
    with pytest.raises(ValueError, match="qkv_rope_cache: need"):
        qkv_rope_cache_triton(x, weights, biases, nw, eps, cos, sin, pos, kc[:, :1], vc[:, :1], slot)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("K,H,D", [(896, 14, 64), (2048, 16, 128)])          # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("B", [1, 4, 16])
def test_triton_equals_the_kernels_it_fuses_gpu(dtype, K, H, D, B):
    """Within one bf16 rounding of what fused_linear then rope_cache (both Triton) give (its K-chunk
    sums may add in another order); fp32 also against the reference. At one row the dispatcher
    takes this kernel; at more it takes the two (measured faster there)."""
    args = inputs(B, K, H, 2, D, 4096, dtype, "cuda", seed=B)
    x, weights, biases, nw, eps, cos, sin, pos, caches, slot = args
    with torch.no_grad():
        caches_got = [c.clone() for c in caches]
        got = call(qkv_rope_cache_triton, args, caches_got)
        caches_two = [c.clone() for c in caches]
        qkv = fused_linear(x, weights, biases, norm_weight=nw, eps=eps)
        q, k, v = qkv.split((H * D, 2 * D, 2 * D), dim=-1)
        two = rope_cache(q.view(B, H, D), k.view(B, 2, D), v.view(B, 2, D), cos, sin, pos, *caches_two, slot)
        tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(got, two, **tol)
        for a, b in zip(caches_got, caches_two):
            torch.testing.assert_close(a, b, **tol)
        if B == 1:
            caches_dispatched = [c.clone() for c in caches]
            assert torch.equal(call(qkv_rope_cache, args, caches_dispatched), got)
            assert all(torch.equal(a, b) for a, b in zip(caches_dispatched, caches_got))
        if dtype == torch.float32:
            caches_ref = [c.clone() for c in caches]
            want = call(qkv_rope_cache_reference, args, caches_ref)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

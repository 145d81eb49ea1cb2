"""RoPE + KV-cache write (kernels/rope_cache.py): the reference against kernels.rope plus the
cache writes it replaces, the Triton kernel against the reference (CPU interpreter in fp32;
on the GPU at Qwen2.5 shapes, bit for bit in bf16 as kernels.rope is)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.rope import rope, rope_reference  # noqa: E402
from deepretrieval.kernels.rope_cache import rope_cache, rope_cache_reference  # noqa: E402
from deepretrieval.kernels.rope_cache_triton import rope_cache_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(B, H, H_kv, D, S, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, (H + 2 * H_kv) * D, generator=g).to(device, dtype)      # one fused projection
    q, k, v = (t.view(B, -1, D) for t in qkv.split((H * D, H_kv * D, H_kv * D), dim=-1))
    angles = torch.arange(S)[:, None].double() * torch.rand(D // 2, generator=g).double()
    cos = torch.cat([angles.cos()] * 2, -1).float().to(device)
    sin = torch.cat([angles.sin()] * 2, -1).float().to(device)
    positions = torch.randint(0, S, (B,), generator=g).to(device)
    caches = [torch.randn(B, H_kv, S, D, generator=g).to(device, dtype) for _ in range(2)]
    slot = torch.tensor([S // 2], device=device)
    return q, k, v, cos, sin, positions, caches, slot


def test_reference_is_rope_then_cache_write():
    q, k, v, cos, sin, pos, (kc, vc), slot = inputs(3, 4, 2, 16, 12, torch.float32, "cpu")
    kc0, vc0 = kc.clone(), vc.clone()
    got = rope_cache_reference(q, k, v, cos, sin, pos, kc, vc, slot)
    q_rot, k_rot = rope_reference(q[:, None], k[:, None], cos, sin, pos[:, None])
    assert torch.equal(got, q_rot[:, 0])
    s = slot.item()
    assert torch.equal(kc[:, :, s], k_rot[:, 0]) and torch.equal(vc[:, :, s], v)
    others = [i for i in range(kc.shape[2]) if i != s]
    assert torch.equal(kc[:, :, others], kc0[:, :, others]) and torch.equal(vc[:, :, others], vc0[:, :, others])


@pytest.mark.parametrize("D", [16, 32])
def test_triton_equals_reference_fp32_small(D):
    q, k, v, cos, sin, pos, (kc, vc), slot = inputs(3, 6, 2, D, 10, torch.float32, DEVICE)
    kc2, vc2 = kc.clone(), vc.clone()
    want = rope_cache_reference(q, k, v, cos, sin, pos, kc, vc, slot)
    got = rope_cache_triton(q, k, v, cos, sin, pos, kc2, vc2, slot)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(kc2, kc, atol=1e-6, rtol=1e-6)
    assert torch.equal(vc2, vc)


def test_triton_rejects_mismatched_caches():
    q, k, v, cos, sin, pos, (kc, vc), slot = inputs(2, 4, 2, 16, 8, torch.float32, DEVICE)
    with pytest.raises(ValueError, match="caches"):
        rope_cache_triton(q, k, v, cos, sin, pos, kc[:, :1], vc[:, :1], slot)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H,D", [(14, 64), (16, 128)])                # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("B", [1, 64, 128])
def test_triton_equals_rope_kernel_and_reference_gpu(dtype, H, D, B):
    """Bit for bit what kernels.rope's Triton kernel gives (the same rotation code; its own test
    bounds it against the exact result), plus the cache writes; fp32 also against the reference."""
    q, k, v, cos, sin, pos, (kc, vc), slot = inputs(B, H, 2, D, 4096, dtype, "cuda", seed=B)
    kc_want, vc_want = kc.clone(), vc.clone()
    with torch.no_grad():
        got = rope_cache(q, k, v, cos, sin, pos, kc, vc, slot)             # dispatches to Triton
        q_rot, k_rot = rope(q[:, None], k[:, None], cos, sin, pos[:, None])   # Triton too
        kc_want[:, :, slot.item()] = k_rot[:, 0]
        vc_want[:, :, slot.item()] = v
        assert torch.equal(got, q_rot[:, 0]) and torch.equal(kc, kc_want) and torch.equal(vc, vc_want)
        if dtype == torch.float32:
            kc_ref, vc_ref = kc_want.clone(), vc_want.clone()
            want = rope_cache_reference(q, k, v, cos, sin, pos, kc_ref, vc_ref, slot)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(kc, kc_ref, atol=1e-5, rtol=1e-5)

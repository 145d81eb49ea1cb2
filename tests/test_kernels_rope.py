"""Rotary embedding: reference vs transformers' apply_rotary_pos_emb; Triton kernel vs reference.

On CPU the kernel runs in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5 shapes,
where bf16 must match bit for bit (same rounding points as HF).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.rope import rope, rope_reference  # noqa: E402
from deepretrieval.kernels.rope_triton import rope_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _tables(max_pos, head_dim, theta=1_000_000.0, device="cpu"):
    """HF-layout cos/sin [max_pos, head_dim] in fp32, as Qwen2's rotary embedding builds them."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(device), emb.sin().to(device)


def _inputs(B, T, H_q, H_kv, D, dtype, device, max_pos=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    # q and k as views of one fused projection [B, T, (H_q + 2 H_kv) * D]: strided, not contiguous
    qkv = torch.randn(B, T, (H_q + 2 * H_kv) * D, generator=g).to(device, dtype)
    q = qkv[..., : H_q * D].view(B, T, H_q, D)
    k = qkv[..., H_q * D: (H_q + H_kv) * D].view(B, T, H_kv, D)
    pad = torch.randint(0, max(T // 2, 1), (B, 1), generator=g)         # left padding per sequence
    start = torch.randint(0, max_pos - T, (B, 1), generator=g)
    positions = (start + (torch.arange(T) - pad).clamp(min=0)).to(device)
    cos, sin = _tables(max_pos, D, device=device)
    return q, k, cos, sin, positions


def test_reference_equals_transformers_bf16():
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
    q, k, cos, sin, positions = _inputs(2, 5, 4, 2, 32, torch.bfloat16, "cpu", max_pos=64)
    hf_q, hf_k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2),
                                      cos[positions].to(q.dtype), sin[positions].to(q.dtype))
    got_q, got_k = rope_reference(q, k, cos, sin, positions)
    torch.testing.assert_close(got_q, hf_q.transpose(1, 2), atol=0, rtol=0)
    torch.testing.assert_close(got_k, hf_k.transpose(1, 2), atol=0, rtol=0)


@pytest.mark.parametrize("head_dim", [32, 24])                   # 24: half not a power of 2
def test_triton_equals_reference_fp32_small(head_dim):
    q, k, cos, sin, positions = _inputs(2, 3, 7, 2, head_dim, torch.float32, DEVICE, max_pos=64)
    q_before = q.clone()
    got_q, got_k = rope_triton(q, k, cos, sin, positions)
    want_q, want_k = rope_reference(q, k, cos, sin, positions)
    torch.testing.assert_close(got_q, want_q, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_k, want_k, atol=1e-6, rtol=1e-5)
    assert torch.equal(q, q_before)                                       # out-of-place


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H_q,H_kv,D", [(14, 2, 64), (16, 2, 128)])  # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("B,T", [(1, 1), (128, 1), (64, 128), (2, 4096)])
def test_triton_equals_reference_gpu(dtype, H_q, H_kv, D, B, T):
    q, k, cos, sin, positions = _inputs(B, T, H_q, H_kv, D, dtype, "cuda", max_pos=8192, seed=B + T)
    got_q, got_k = rope(q, k, cos, sin, positions)                  # dispatches to Triton
    want_q, want_k = rope_reference(q, k, cos, sin, positions)
    if dtype == torch.float32:
        torch.testing.assert_close(got_q, want_q, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=1e-5)
        return
    # bf16: bit equality with the reference is not what the GPU gives (measured on an H100: 15 % of
    # elements differ, by one bf16 ulp of the products, because the compiler contracts the products
    # and the sum into fp32 FMAs where the reference rounds each product). Both must stay within one
    # bf16 ulp of the two products' magnitudes of the exact result, computed in fp32 from the same
    # bf16-rounded inputs (HF casts cos/sin to the activation dtype); a wrong position, sign or half
    # would miss that bound by orders of magnitude.
    cos_b, sin_b = cos.to(dtype).float(), sin.to(dtype).float()
    exact_q, exact_k = rope_reference(q.float(), k.float(), cos_b, sin_b, positions)
    c, s = cos_b[positions].unsqueeze(2).abs(), sin_b[positions].unsqueeze(2).abs()      # [B, T, 1, D]

    def magnitude(x):                     # |x * cos| + |rotate_half(x) * sin|, elementwise
        x = x.float().abs()
        return x * c + torch.cat((x[..., D // 2:], x[..., : D // 2]), dim=-1) * s

    for got, want, exact, x in ((got_q, want_q, exact_q, q), (got_k, want_k, exact_k, k)):
        bound = magnitude(x) * 2.0 ** -7 + 1e-6
        for name, value in (("triton", got), ("reference", want)):
            excess = ((value.float() - exact).abs() - bound).max().item()
            assert excess <= 0, f"{name} off the exact bf16-input result by {excess:.3g} beyond one ulp"

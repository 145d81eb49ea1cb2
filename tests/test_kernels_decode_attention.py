"""Decode attention over the static KV cache: reference vs torch SDPA; Triton kernel vs reference.

On CPU the kernel runs in Triton's interpreter (fp32, small shapes, forced split counts); on a GPU
at Qwen2.5 shapes (head_dim 64/128, 14/16 query heads, 2 KV heads, lengths 1..4096, batch 1..128),
bf16 and fp32, and replayed from a CUDA graph.
"""
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.decode_attention import (decode_attention, decode_attention_reference,  # noqa: E402
                                      kv_range_from_mask)
from deepretrieval.kernels.decode_attention_triton import decode_attention_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B, H_q, H_kv, D, S_max, dtype, device, seed=0):
    """q, layer 1's slices of a static cache [L=2, B, H_kv, S_max, D], and random left-padded
    ranges [start, end) with end <= S_max (end - start from 1 to S_max)."""
    g_dev = torch.Generator(device).manual_seed(seed)          # caches reach 2 GB: fill on device
    q = torch.randn(B, H_q, D, generator=g_dev, device=device).to(dtype)
    cache = torch.randn(2, 2, B, H_kv, S_max, D, generator=g_dev, device=device).to(dtype)
    g = torch.Generator().manual_seed(seed)
    end = torch.randint(1, S_max + 1, (B,), generator=g)
    start = (torch.rand(B, generator=g) * end).long().clamp(max=end - 1)
    start[0], end[0] = 0, S_max                                        # one full-length sequence
    return (q, cache[0, 1], cache[1, 1], start.to(device, torch.int32), end.to(device, torch.int32))


def test_reference_equals_sdpa():
    q, k, v, start, end = _inputs(3, 6, 2, 16, 50, torch.float32, "cpu")
    pos = torch.arange(50)
    mask = (pos >= start[:, None].long()) & (pos < end[:, None].long())  # [B, S]
    want = F.scaled_dot_product_attention(q[:, :, None], k.repeat_interleave(3, dim=1),
                                          v.repeat_interleave(3, dim=1), attn_mask=mask[:, None, None])
    torch.testing.assert_close(decode_attention_reference(q, k, v, start, end), want[:, :, 0],
                               atol=1e-5, rtol=1e-5)


def test_kv_range_from_mask():
    valid = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    start, end = kv_range_from_mask(valid)
    assert start.tolist() == [2, 0, 0, 0] and end.tolist() == [5, 5, 2, 0]
    assert start.dtype == end.dtype == torch.int32


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("H_q,D", [(4, 16), (6, 32)])               # G = 2 and 3 (not a power of 2)
def test_triton_equals_reference_fp32_small(H_q, D, num_splits):
    q, k, v, start, end = _inputs(4, H_q, 2, D, 100, torch.float32, DEVICE, seed=H_q)
    start[1], end[1] = 37, 37                                          # no valid key -> zeros
    got = decode_attention_triton(q, k, v, start, end, scale=0.3, num_splits=num_splits, block_n=16)
    want = decode_attention_reference(q, k, v, start, end, scale=0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got[1].abs().max() == 0


def test_triton_cache_in_another_layout_fp32_small():
    """Strides, not layouts, are what the kernel reads: a [B, S, H_kv, D] cache viewed as
    [B, H_kv, S, D] gives the same answer."""
    q, k, v, start, end = _inputs(2, 4, 2, 16, 40, torch.float32, DEVICE, seed=7)
    k_bshd, v_bshd = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
    got = decode_attention_triton(q, k_bshd.transpose(1, 2), v_bshd.transpose(1, 2), start, end,
                                  num_splits=2, block_n=16)
    torch.testing.assert_close(got, decode_attention_reference(q, k, v, start, end), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("H_q,D", [(14, 64), (16, 128)])             # Qwen2.5-0.5B, 3B; 2 KV heads
@pytest.mark.parametrize("B,S_max", [(1, 1), (1, 4096), (8, 333), (128, 1024), (128, 4096)])
def test_triton_equals_reference_gpu(dtype, H_q, D, B, S_max):
    q, k, v, start, end = _inputs(B, H_q, 2, D, S_max, dtype, "cuda", seed=B + S_max)
    got = decode_attention(q, k, v, start, end)                       # dispatches to Triton
    want = decode_attention_reference(q, k, v, start, end)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got, want, **tol)


@pytest.mark.gpu
def test_cuda_graph_replay_follows_lengths_on_device():
    """Captured once, replayed after bumping kv_end in place: the graph reads the new lengths."""
    q, k, v, start, end = _inputs(16, 14, 2, 64, 512, torch.bfloat16, "cuda", seed=3)
    start, end = start.clamp(max=99), torch.full_like(end, 100)
    decode_attention_triton(q, k, v, start, end)                      # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention_triton(q, k, v, start, end)
    for _ in range(3):
        end.add_(137)
        graph.replay()
        torch.testing.assert_close(out, decode_attention_reference(q, k, v, start, end),
                                   atol=2e-2, rtol=2e-2)

"""Triton qkv projection + RoPE + KV-cache write for a few decode rows: see kernels/qkv_rope_cache.py.

RoPE (HF rotate_half) pairs dimension i of a head with i + D/2. Program p takes BLOCK_N such
pairs of one head of q, k or v: weight rows [i0, i0 + BLOCK_N) and the same + D/2 of that head,
as two tiles through fused_linear's `_project` (the gate/up path's two accumulators). It then has
both halves of every pair it owns, rotates q and k in registers (kernels/rope_triton.py's
`_rotate`, so the rounding is kernels.rope's), and stores q, or k / v at `slot` of the cache.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.fused_linear import check_fused_linear_args
from deepretrieval.kernels.fused_linear_triton import (LinearConfig, _first_chunks, _project, check_launch_args, default_config,
                                         launch_options)
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous
from deepretrieval.kernels.rope_cache import check_cache_args
from deepretrieval.kernels.rope_triton import _cos_sin, _rotate


@triton.jit
def _qkv_rope_cache_kernel(x_ptr, nw_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr,
                           cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr, slot_ptr, q_out_ptr,
                           B, K, H_Q, H_KV, eps, stride_xb, stride_qb, stride_cos, stride_sin,
                           stride_cb, stride_ch, stride_cs,
                           HALF: tl.constexpr, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           USE_DOT: tl.constexpr, DOT_FP32: tl.constexpr, USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    pairs_per_head: tl.constexpr = HALF // BLOCK_N
    head = pid // pairs_per_head                     # over q heads, then k heads, then v heads
    i0 = (pid % pairs_per_head) * BLOCK_N
    w_ptr = wq_ptr
    b_ptr = bq_ptr
    h = head
    if head >= H_Q + H_KV:
        w_ptr = wv_ptr
        b_ptr = bv_ptr
        h = head - H_Q - H_KV
    elif head >= H_Q:
        w_ptr = wk_ptr
        b_ptr = bk_ptr
        h = head - H_Q
    dt = x_ptr.dtype.element_ty
    rows = tl.arange(0, BLOCK_B)
    d = i0 + tl.arange(0, BLOCK_N)                   # first-half dimensions of this program's pairs
    lo = h * 2 * HALF + d                            # their weight rows; the partners are lo + HALF
    n_rows = (h + 1) * 2 * HALF                      # no mask needed: every row exists
    w_lo, w_hi = _first_chunks(w_ptr, lo, n_rows, w_ptr, lo + HALF, n_rows, K, True, BLOCK_K)
    wait_for_previous(USE_PDL)
    # the epilogue's inputs first (positions and slot change between steps): their latency then
    # hides behind the projection instead of following it
    pos = tl.load(pos_ptr + rows, mask=rows < B, other=0).to(tl.int64)
    slot = tl.load(slot_ptr).to(tl.int64)
    c1, c2, s1, s2 = _cos_sin(cos_ptr + i0, sin_ptr + i0, pos[:, None], stride_cos, stride_sin, HALF, dt, BLOCK_N)
    b_lo = tl.zeros([BLOCK_N], tl.float32)
    b_hi = tl.zeros([BLOCK_N], tl.float32)
    if HAS_BIAS:
        b_lo = tl.load(b_ptr + lo).to(tl.float32)
        b_hi = tl.load(b_ptr + lo + HALF).to(tl.float32)
    acc_lo, acc_hi = _project(x_ptr, nw_ptr, stride_xb, rows, B, K, eps, w_lo, w_ptr, lo, n_rows, w_hi, w_ptr,
                              lo + HALF, n_rows, True, HAS_NORM, BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, DOT_FP32)
    y_lo = (acc_lo + b_lo[None, :]).to(dt).to(tl.float32)                  # F.linear's rounding
    y_hi = (acc_hi + b_hi[None, :]).to(dt).to(tl.float32)                  # [BLOCK_B, BLOCK_N]
    rmask = rows[:, None] < B
    if head < H_Q + H_KV:                                                   # q and k rotate; v does not
        y_lo, y_hi = _rotate(y_lo, y_hi, c1, c2, s1, s2, dt)
    cache_offsets = rows[:, None].to(tl.int64) * stride_cb + h * stride_ch + slot * stride_cs + d[None, :]
    if head < H_Q:
        dst = q_out_ptr + rows[:, None].to(tl.int64) * stride_qb + h * 2 * HALF + d[None, :]
    elif head < H_Q + H_KV:
        dst = kc_ptr + cache_offsets
    else:
        dst = vc_ptr + cache_offsets
    tl.store(dst, y_lo.to(dt), mask=rmask)
    tl.store(dst + HALF, y_hi.to(dt), mask=rmask)


def qkv_rope_cache_triton(x, weights, biases, norm_weight, eps: float, cos, sin, positions,
                          k_cache, v_cache, slot, config: LinearConfig | None = None) -> torch.Tensor:
    check_fused_linear_args(x, weights, biases, norm_weight, None, False)
    B, K = x.shape
    _, H_kv, _, D = k_cache.shape
    half = D // 2
    wq, wk, wv = weights if len(weights) == 3 else (None,) * 3
    if wq is None or wq.shape[0] % D or wk.shape[0] != H_kv * D or wv.shape[0] != H_kv * D:
        raise ValueError(f"qkv_rope_cache: need (wq, wk, wv) of [H_q * {D}, K], [{H_kv} * {D}, K] x2 for "
                         f"caches {tuple(k_cache.shape)}; got {[tuple(w.shape) for w in weights]}")
    has_bias = check_launch_args(x, weights, biases, "qkv_rope_cache_triton")
    check_cache_args("qkv_rope_cache", B, H_kv, D, x.dtype, cos, sin, positions, k_cache, v_cache, slot)
    if config is None:
        # One row: two tiles as gate/up, 8 warps (in the batch-1 decode step on an H100, 2,518 us a
        # step at Qwen2.5-3B shapes against 2,569 with 4 warps; .gpu A/B in
        # bench/results/logs/h100_qkv_rope_cache_ab.log). More rows: tl.dot tiles half of
        # fused_linear's, so as many programs as it has.
        config = default_config(B, K, weights_per_column=2)
        config = (replace(config, num_warps=8) if B == 1 else replace(config, block_n=config.block_n // 2))
    config = replace(config, block_n=min(config.block_n, half))
    H_q = wq.shape[0] // D
    q = torch.empty((B, H_q, D), dtype=x.dtype, device=x.device)
    bs = biases if has_bias else weights
    _qkv_rope_cache_kernel[((H_q + 2 * H_kv) * (half // config.block_n),)](
        x, norm_weight if norm_weight is not None else x, *weights, *bs, cos, sin, positions,
        k_cache, v_cache, slot, q, B, K, H_q, H_kv, eps, x.stride(0), q.stride(0), cos.stride(0), sin.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), HALF=half, HAS_NORM=norm_weight is not None,
        HAS_BIAS=has_bias, **launch_options(x, config, "qkv_rope_cache_triton"), **pdl_options(x.device))
    return q

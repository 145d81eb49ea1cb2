"""Triton RoPE + KV-cache write for one decode token: one program per row rotates its q heads
into a new tensor and its k heads straight into the cache at `slot`, and copies v there.

Same signature and results as `deepretrieval.kernels.rope_cache.rope_cache_reference`; the rotation is
kernels/rope_triton.py's `_cos_sin` and `_rotate_heads` (so it rounds exactly as kernels.rope does).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous
from deepretrieval.kernels.rope_cache import check_cache_args
from deepretrieval.kernels.rope_triton import _cos_sin, _rotate_heads


@triton.jit
def _rope_cache_heads(b, q0, n_q, kv0, n_kv, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr,
                      slot_ptr, q_out_ptr, H_Q, HALF, stride_qb, stride_qh, stride_kb, stride_kh,
                      stride_vb, stride_vh, stride_cb, stride_ch, stride_cs, stride_cos, stride_sin,
                      BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Row b (int64): q heads [q0, q0 + n_q) rotated into q_out [B, H_Q, D]; k heads [kv0, kv0 + n_kv)
    rotated and v heads copied into the cache at `slot`."""
    pos = tl.load(pos_ptr + b).to(tl.int64)
    slot = tl.load(slot_ptr).to(tl.int64)
    c1, c2, s1, s2 = _cos_sin(cos_ptr, sin_ptr, pos, stride_cos, stride_sin, HALF, q_ptr.dtype.element_ty,
                              BLOCK_HALF)
    _rotate_heads(q_ptr + b * stride_qb + q0 * stride_qh, q_out_ptr + (b * H_Q + q0) * 2 * HALF, stride_qh,
                  2 * HALF, n_q, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_HALF)
    cache_row = b * stride_cb + slot * stride_cs + kv0 * stride_ch
    _rotate_heads(k_ptr + b * stride_kb + kv0 * stride_kh, kc_ptr + cache_row, stride_kh, stride_ch, n_kv,
                  c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_HALF)
    h = tl.arange(0, BLOCK_H)[:, None]
    dd = tl.arange(0, 2 * BLOCK_HALF)[None, :]
    vmask = (h < n_kv) & (dd < 2 * HALF)
    v = tl.load(v_ptr + b * stride_vb + (kv0 + h) * stride_vh + dd, mask=vmask)
    tl.store(vc_ptr + cache_row + h * stride_ch + dd, v, mask=vmask)


@triton.jit
def _rope_cache_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr, slot_ptr, q_out_ptr,
                       H_Q, H_KV, HALF, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
                       stride_cb, stride_ch, stride_cs, stride_cos, stride_sin,
                       BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    _rope_cache_heads(tl.program_id(0).to(tl.int64), 0, H_Q, 0, H_KV, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr,
                      pos_ptr, kc_ptr, vc_ptr, slot_ptr, q_out_ptr, H_Q, HALF, stride_qb, stride_qh,
                      stride_kb, stride_kh, stride_vb, stride_vh, stride_cb, stride_ch, stride_cs,
                      stride_cos, stride_sin, BLOCK_H, BLOCK_HALF)


def rope_cache_triton(q, k, v, cos, sin, positions, k_cache, v_cache, slot) -> torch.Tensor:
    B, H_q, D = q.shape
    H_kv = k.shape[1]
    if k.shape != (B, H_kv, D) or v.shape != k.shape or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"rope_cache: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit")
    check_cache_args("rope_cache", B, H_kv, D, q.dtype, cos, sin, positions, k_cache, v_cache, slot)
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        raise ValueError("rope_cache: q, k and v need unit stride along the last dimension")
    q_out = torch.empty((B, H_q, D), dtype=q.dtype, device=q.device)
    half = D // 2
    pdl = pdl_options(q.device)
    _rope_cache_kernel[(B,)](
        q, k, v, cos, sin, positions, k_cache, v_cache, slot, q_out, H_q, H_kv, half,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), cos.stride(0), sin.stride(0),
        BLOCK_H=triton.next_power_of_2(max(H_q, H_kv)), BLOCK_HALF=triton.next_power_of_2(half), num_warps=4, **pdl)
    return q_out

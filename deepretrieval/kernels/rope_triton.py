"""Triton rotary embedding: one program per token rotates all of its q heads and k heads.

Same signature and results as `deepretrieval.kernels.rope.rope_reference` (see kernels/rope.py for the
layout and numerics); the outputs are new contiguous tensors [B, T, H, D].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _round(x, dtype: tl.constexpr):
    """x rounded to `dtype` and widened back to fp32: one rounding of a torch op in `dtype`."""
    return x.to(dtype).to(tl.float32)


@triton.jit
def _rotate(x1, x2, c1, c2, s1, s2, dt: tl.constexpr):
    """The rotated halves (fp32 values, to be stored in `dt`) of a pair of halves x1, x2 (values of
    `dt` in fp32), rounding each product to `dt` as HF's eager op does."""
    o1 = _round(x1 * c1, dt) - _round(x2 * s1, dt)                          # x*cos + (-x2)*sin
    o2 = _round(x2 * c2, dt) + _round(x1 * s2, dt)                          # x*cos + x1*sin
    return o1, o2


@triton.jit
def _rotate_heads(x_ptr, out_ptr, stride_xh, stride_oh, H, c1, c2, s1, s2,
                  HALF, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Rotates the H heads at x_ptr ([H, 2 * HALF], head stride stride_xh) into out_ptr."""
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (h < H) & (d < HALF)
    x_lo = x_ptr + h * stride_xh + d
    x1 = tl.load(x_lo, mask=mask, other=0.0).to(tl.float32)               # [BLOCK_H, BLOCK_HALF]
    x2 = tl.load(x_lo + HALF, mask=mask, other=0.0).to(tl.float32)
    o1, o2 = _rotate(x1, x2, c1, c2, s1, s2, x_ptr.dtype.element_ty)
    o_lo = out_ptr + h * stride_oh + d
    tl.store(o_lo, o1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(o_lo + HALF, o2.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cos_sin(cos_ptr, sin_ptr, pos, stride_cos, stride_sin, HALF, dt: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Both halves of cos and sin at `pos` ([1, BLOCK_HALF] each), rounded to the activation dtype
    `dt` as HF casts them, in fp32."""
    d = tl.arange(0, BLOCK_HALF)[None, :]
    dmask = d < HALF
    c1 = tl.load(cos_ptr + pos * stride_cos + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    c2 = tl.load(cos_ptr + pos * stride_cos + HALF + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    s1 = tl.load(sin_ptr + pos * stride_sin + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    s2 = tl.load(sin_ptr + pos * stride_sin + HALF + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    return c1, c2, s1, s2


@triton.jit
def _rope_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, pos_ptr, q_out_ptr, k_out_ptr,
                 T, H_Q, H_KV, HALF,
                 stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
                 stride_pb, stride_pt, stride_cos, stride_sin,
                 BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    b = token // T
    t = token % T
    pos = tl.load(pos_ptr + b * stride_pb + t * stride_pt).to(tl.int64)
    c1, c2, s1, s2 = _cos_sin(cos_ptr, sin_ptr, pos, stride_cos, stride_sin, HALF, q_ptr.dtype.element_ty,
                              BLOCK_HALF)
    _rotate_heads(q_ptr + b * stride_qb + t * stride_qt, q_out_ptr + token * H_Q * 2 * HALF,
                  stride_qh, 2 * HALF, H_Q, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_HALF)
    _rotate_heads(k_ptr + b * stride_kb + t * stride_kt, k_out_ptr + token * H_KV * 2 * HALF,
                  stride_kh, 2 * HALF, H_KV, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_HALF)


def rope_triton(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H_q, D = q.shape
    H_kv = k.shape[2]
    if k.shape != (B, T, H_kv, D) or k.dtype != q.dtype:
        raise ValueError(f"rope: k {tuple(k.shape)} {k.dtype} does not fit q {tuple(q.shape)} {q.dtype}")
    if D % 2 or cos.shape[-1] != D or sin.shape != cos.shape or positions.shape != (B, T):
        raise ValueError(f"rope: need even D with cos/sin [P, {D}] and positions [{B}, {T}]; got D={D}, "
                         f"cos {tuple(cos.shape)}, sin {tuple(sin.shape)}, positions {tuple(positions.shape)}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or cos.stride(-1) != 1 or sin.stride(-1) != 1:
        raise ValueError("rope: q, k, cos and sin need unit stride along the last dimension")
    q_out = torch.empty((B, T, H_q, D), dtype=q.dtype, device=q.device)
    k_out = torch.empty((B, T, H_kv, D), dtype=k.dtype, device=k.device)
    half = D // 2
    _rope_kernel[(B * T,)](
        q, k, cos, sin, positions, q_out, k_out, T, H_q, H_kv, half,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        positions.stride(0), positions.stride(1), cos.stride(0), sin.stride(0),
        BLOCK_H=triton.next_power_of_2(max(H_q, H_kv)), BLOCK_HALF=triton.next_power_of_2(half),
        num_warps=4)
    return q_out, k_out

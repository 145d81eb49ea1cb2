"""Triton decode attention over the static KV cache (flash-decoding: split-K, then a reduce).

Same signature and results as `deepretrieval.kernels.decode_attention.decode_attention_reference` (see that
module for the cache layout and the (kv_start, kv_end) contract), plus two keyword-only tuning
knobs. Two kernels:

  split   grid (B, H_kv, num_splits). Each program takes one sequence, one KV head and all
          G = H_q / H_kv query heads that share it (so K and V are read once per KV head), and one
          contiguous slice of that sequence's valid range [kv_start, kv_end). The slice is cut at
          run time from the lengths on the device, so the grid is static (CUDA-graph safe) while
          the work follows the actual lengths. Online softmax in fp32 (exp2, scale folded in);
          writes a normalised partial output and its log-sum-exp.
  reduce  grid (B, H_q): merges the partials by their log-sum-exp. Skipped when num_splits == 1,
          where the split kernel writes the final output itself.

The G query heads form the M side of `tl.dot` padded to 16 rows (the tensor-core minimum);
decode is bound by reading K and V, so the padded rows cost nothing that matters. bf16/fp16 dots
use tensor cores with fp32 accumulation (P is rounded to V's dtype before P@V, as in
FlashAttention); fp32 inputs use IEEE fp32 dots (no TF32), so fp32 matches the reference tightly.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from deepretrieval.kernels import parallel_programs
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous


@triton.jit
def _attention_split_tile(b, h_kv, split, q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, o_ptr, lse_ptr,
                          stride_qb, stride_qh, stride_kb, stride_kh, stride_ks,
                          stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                          stride_lb, stride_lh, qk_scale_log2, G: tl.constexpr, D: tl.constexpr,
                          BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr):
    """Slice `split` of sequence b's keys for the query heads of KV head h_kv (b: int64)."""
    start = tl.load(start_ptr + b).to(tl.int32)
    end = tl.load(end_ptr + b).to(tl.int32)
    # this program's slice of [start, end): equal shares rounded up to whole blocks
    per_split = tl.cdiv(tl.cdiv(tl.maximum(end - start, 0), NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = start + split * per_split
    hi = tl.minimum(lo + per_split, end)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, D)
    heads = h_kv * G + g                                                     # [BLOCK_G]
    gmask = g < G
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=gmask[:, None], other=0.0)                              # [BLOCK_G, D]
    k_base = k_ptr + b * stride_kb + h_kv * stride_kh
    v_base = v_ptr + b * stride_vb + h_kv * stride_vh

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)                       # running max (log2 units)
    l = tl.zeros([BLOCK_G], tl.float32)                                      # running sum of exp2
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < hi
        # both loads first: decode is bound by how many bytes are in flight
        k_t = tl.load(k_base + n[None, :] * stride_ks + d[:, None], mask=nmask[None, :], other=0.0)
        v = tl.load(v_base + n[:, None] * stride_vs + d[None, :], mask=nmask[:, None], other=0.0)
        s = tl.dot(q, k_t, input_precision="ieee") * qk_scale_log2           # [BLOCK_G, BLOCK_N]
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))      # finite: every block has a valid key
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m = m_new

    l_safe = tl.where(l > 0, l, 1.0)                                          # empty slice -> zeros
    out = acc / l_safe[:, None]
    o_ptrs = o_ptr + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + d[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=gmask[:, None])
    if NUM_SPLITS > 1:
        lse = tl.where(l > 0, m + tl.log2(l_safe), float("-inf"))
        tl.store(lse_ptr + b * stride_lb + heads * stride_lh + split, lse, mask=gmask)


@triton.jit
def _attention_split_kernel(q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, o_ptr, lse_ptr,
                            stride_qb, stride_qh, stride_kb, stride_kh, stride_ks,
                            stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                            stride_lb, stride_lh, qk_scale_log2, G: tl.constexpr, D: tl.constexpr,
                            BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
                            USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    _attention_split_tile(tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2),
                          q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, o_ptr, lse_ptr,
                          stride_qb, stride_qh, stride_kb, stride_kh, stride_ks,
                          stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                          stride_lb, stride_lh, qk_scale_log2, G, D, BLOCK_G, BLOCK_N, NUM_SPLITS)


@triton.jit
def _attention_reduce_kernel(o_part_ptr, lse_ptr, out_ptr, stride_pb, stride_ph, stride_ps,
                             stride_lb, stride_lh, stride_ob, stride_oh,
                             D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    sp = tl.arange(0, BLOCK_S)
    d = tl.arange(0, D)
    smask = sp < NUM_SPLITS
    lse = tl.load(lse_ptr + b * stride_lb + h * stride_lh + sp, mask=smask, other=float("-inf"))
    lse_max = tl.max(lse, axis=0)
    lse_max = tl.where(lse_max > float("-inf"), lse_max, 0.0)   # all slices empty: weights are 0
    w = tl.exp2(lse - lse_max)                                                # [BLOCK_S]
    o = tl.load(o_part_ptr + b * stride_pb + h * stride_ph + sp[:, None] * stride_ps + d[None, :],
                mask=smask[:, None], other=0.0)                                # [BLOCK_S, D]
    total = tl.sum(w, axis=0)
    out = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


def default_num_splits(batch: int, heads_kv: int, s_max: int, block_n: int, device: torch.device) -> int:
    """Enough slices per (sequence, KV head) to fill the device, at most one per block of S_max."""
    want = triton.cdiv(parallel_programs(device), batch * heads_kv)
    return max(1, min(want, triton.cdiv(s_max, block_n)))


def decode_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            kv_start: torch.Tensor, kv_end: torch.Tensor,
                            scale: float | None = None, *, num_splits: int | None = None,
                            block_n: int = 64) -> torch.Tensor:
    B, H_q, D = q.shape
    _, H_kv, S_max, _ = k_cache.shape
    if k_cache.shape != (B, H_kv, S_max, D) or v_cache.shape != k_cache.shape or H_q % H_kv:
        raise ValueError(f"decode_attention: q {tuple(q.shape)} does not fit k_cache "
                         f"{tuple(k_cache.shape)} / v_cache {tuple(v_cache.shape)}")
    if kv_start.shape != (B,) or kv_end.shape != (B,):
        raise ValueError(f"decode_attention: kv_start/kv_end must be [{B}], got "
                         f"{tuple(kv_start.shape)} / {tuple(kv_end.shape)}")
    if D < 16 or D & (D - 1) or block_n < 16 or block_n & (block_n - 1):
        raise ValueError(f"decode_attention: head_dim {D} and block_n {block_n} must be powers of 2, >= 16")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("decode_attention: q, k_cache and v_cache need unit stride along head_dim")
    G = H_q // H_kv
    scale = D ** -0.5 if scale is None else scale
    if num_splits is None:
        num_splits = default_num_splits(B, H_kv, S_max, block_n, q.device)
    out = torch.empty((B, H_q, D), dtype=q.dtype, device=q.device)
    pdl = pdl_options(q.device)
    if num_splits == 1:
        o_part, lse = out, out                            # the split kernel writes `out`; no lse
        stride_os, stride_lb, stride_lh = 0, 0, 0
    else:
        o_part = torch.empty((B, H_q, num_splits, D), dtype=torch.float32, device=q.device)
        lse = torch.empty((B, H_q, num_splits), dtype=torch.float32, device=q.device)
        stride_os, stride_lb, stride_lh = o_part.stride(2), lse.stride(0), lse.stride(1)
    _attention_split_kernel[(B, H_kv, num_splits)](
        q, k_cache, v_cache, kv_start, kv_end, o_part, lse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        o_part.stride(0), o_part.stride(1), stride_os, stride_lb, stride_lh,
        scale * math.log2(math.e), G=G, D=D, BLOCK_G=max(16, triton.next_power_of_2(G)),
        BLOCK_N=block_n, NUM_SPLITS=num_splits, num_warps=4, num_stages=2, **pdl)
    if num_splits > 1:
        _attention_reduce_kernel[(B, H_q)](
            o_part, lse, out, o_part.stride(0), o_part.stride(1), o_part.stride(2),
            lse.stride(0), lse.stride(1), out.stride(0), out.stride(1),
            D=D, NUM_SPLITS=num_splits, BLOCK_S=triton.next_power_of_2(num_splits), num_warps=4, **pdl)
    return out

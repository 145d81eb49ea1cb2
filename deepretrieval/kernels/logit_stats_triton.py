"""Triton softmax statistics and gradient of LM-head logits: see kernels/logit_stats.py for the
contract. Same signatures and results as the references there up to fp32 rounding: summation order, and
a multiplication by 1 / temperature where the reference divides (exact at temperature 1; an fp32
division per logit made the kernel compute-bound).

  stats  grid (N,): one program per row streams the vocabulary in BLOCK_V chunks, keeping per
         lane an online log-sum-exp (max m, sum s of exp(z - m)) and the entropy sum
         t = sum exp(z - m) * z, then merges its lanes. One read of each logit. A chunk has a few
         hundred rows, so each program wants many bytes in flight: 4,096 logits per iteration.
         H100, 441 x 151,936 (`python -m bench.kernels --only logit_stats`): 112 us, 14x eager
         torch, 1.4x torch.compile, but 40 % of HBM bandwidth (too few rows to hide latency;
         splitting rows over several programs is the next step); blocks of 1,024 / 2,048 /
         8,192: 120 / 109 / 112 us.
  grad   grid (N, cdiv(v, BLOCK_V)): elementwise, one read and one write of each logit (H100,
         16,384 x 4,096: 91 % of HBM bandwidth, 20x eager torch, 2.8x torch.compile).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.logit_stats import _check_grad_args


@triton.jit
def _stats_kernel(logits_ptr, tokens_ptr, lse_ptr, ztok_ptr, pz_ptr, V, stride_row, inv_temperature,
                  ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    lanes = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    t = tl.zeros([BLOCK_V], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + lanes
        mask = cols < V
        z = tl.load(base + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, z)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)     # lane saw only padding so far
        alpha = tl.exp(m - m_ref)
        e = tl.exp(z - m_ref)                                     # 0 on padding
        s = s * alpha + e
        if ENTROPY:
            t = t * alpha + e * tl.where(mask, z, 0.0)
        m = m_new
    m_max = tl.max(m, axis=0)
    w = tl.exp(m - m_max)                                         # [BLOCK_V]; 0 on empty lanes
    total = tl.sum(s * w, axis=0)
    tl.store(lse_ptr + row, m_max + tl.log(total))
    token = tl.load(tokens_ptr + row)
    tl.store(ztok_ptr + row, tl.load(base + token).to(tl.float32) * inv_temperature)
    if ENTROPY:
        tl.store(pz_ptr + row, tl.sum(t * w, axis=0) / total)


@triton.jit
def _grad_kernel(logits_ptr, out_ptr, tokens_ptr, lse_ptr, pz_ptr, dlogp_ptr, dent_ptr, v0, v,
                 stride_row, stride_out, inv_temperature, HAS_LOGP: tl.constexpr, HAS_ENT: tl.constexpr,
                 BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    mask = cols < v
    z = tl.load(logits_ptr + row * stride_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_temperature
    p = tl.exp(z - tl.load(lse_ptr + row))
    dz = tl.zeros([BLOCK_V], tl.float32)
    if HAS_ENT:
        dz = -((z - tl.load(pz_ptr + row)) * p * tl.load(dent_ptr + row))
    if HAS_LOGP:
        dlogp = tl.load(dlogp_ptr + row)
        onehot = (v0 + cols) == tl.load(tokens_ptr + row)
        dz = dz - p * dlogp + tl.where(onehot, dlogp, 0.0)
    dz = dz * inv_temperature
    tl.store(out_ptr + row * stride_out + cols, dz.to(out_ptr.dtype.element_ty), mask=mask)


def logit_stats_triton(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: bool,
                       block_v: int = 4096):
    N, V = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("logit_stats: logits need unit stride along the vocabulary")
    tokens = tokens.contiguous()        # the kernel indexes per-row vectors by row
    lse = torch.empty(N, dtype=torch.float32, device=logits.device)
    z_token = torch.empty_like(lse)
    pz = torch.empty_like(lse) if entropy else None
    if N:
        _stats_kernel[(N,)](logits, tokens, lse, z_token, pz if entropy else lse, V, logits.stride(0),
                            1.0 / temperature, ENTROPY=entropy, BLOCK_V=block_v,
                            num_warps=8 if block_v >= 4096 else 4)
    return lse, z_token, pz


def logit_grad_triton(logits: torch.Tensor, v0: int, tokens: torch.Tensor, lse: torch.Tensor,
                      pz: torch.Tensor | None, dlogp: torch.Tensor | None, dent: torch.Tensor | None,
                      temperature: float, block_v: int = 1024) -> torch.Tensor:
    _check_grad_args(logits, tokens, lse, pz, dlogp, dent)
    N, v = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("logit_grad: logits need unit stride along the vocabulary")
    # The kernel indexes per-row vectors by row; `logp.sum().backward()` hands over an expanded
    # dlogp (stride 0, one element stored), which it would read past.
    tokens, lse, pz, dlogp, dent = (t.contiguous() if t is not None else None
                                    for t in (tokens, lse, pz, dlogp, dent))
    out = torch.empty((N, v), dtype=logits.dtype, device=logits.device)
    if N and v:
        _grad_kernel[(N, triton.cdiv(v, block_v))](
            logits, out, tokens, lse, pz if pz is not None else lse, dlogp if dlogp is not None else lse,
            dent if dent is not None else lse, v0, v, logits.stride(0), out.stride(0), 1.0 / temperature,
            HAS_LOGP=dlogp is not None, HAS_ENT=dent is not None, BLOCK_V=block_v, num_warps=4)
    return out

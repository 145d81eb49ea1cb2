"""Triton fused linear for decode (a few rows): see kernels/fused_linear.py for what it computes.

One program computes BLOCK_N output columns of every row, streaming its BLOCK_N rows of the
weight through in BLOCK_K chunks: decode is bound by reading the weights once, so the work is cut
along N only (no split-K reduce, so bias, SiLU-gate and residual stay in the epilogue of the one
kernel). Several weights (q, k, v) share one grid: the first programs take W0, the next W1, ...;
with silu_mul each program takes the same columns of the gate and the up weight. RMSNorm of x is
recomputed by every program (x is a few KB, cached in L2); it costs nothing next to the weights.

Launched with programmatic dependent launch on Hopper (kernels/pdl_triton.py), a program loads
its first weight chunk while the kernel before it is still finishing.

One row (batch-1 latency) multiplies in fp32 on the CUDA cores and reduces along K; more rows use
`tl.dot` with the rows padded to 16 (tensor cores, fp32 accumulation), in fp32 under the CPU
interpreter, whose bf16 dot is wrong.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.fused_linear import MAX_ROWS, check_fused_linear_args
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous


@dataclass(frozen=True)
class LinearConfig:
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


CHUNK_ELEMENTS = 8192      # weight elements one single-row program holds per K-chunk


def default_config(rows: int, K: int, weights_per_column: int = 1) -> LinearConfig:
    """Block sizes from a sweep on an H100 (`python -m bench.kernels --only fused_linear --sweep`,
    Qwen2.5-0.5B and 3B projections, with the double-buffered loop and PDL). One row: K-chunks of
    up to 2,048 and as many columns (at most 4) as keep a chunk at CHUNK_ELEMENTS weights, where a
    gate/up pair (`weights_per_column` 2) counts twice; 8 warps where K takes several chunks (the
    down projections). More rows: tl.dot's 16-row tiles."""
    if rows == 1:
        block_k = min(2048, triton.next_power_of_2(K))
        block_n = max(1, min(4, CHUNK_ELEMENTS // (block_k * weights_per_column)))
        return LinearConfig(block_n=block_n, block_k=block_k, num_warps=8 if K > block_k else 4)
    return LinearConfig(block_n=32, block_k=min(256, max(16, triton.next_power_of_2(K))))


@triton.jit
def _rms_inv(x_ptr, stride_xb, rows, B, K, eps, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """1 / sqrt(mean(x^2) + eps) per row, in fp32: [BLOCK_B]."""
    ss = tl.zeros([BLOCK_B], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xv = tl.load(x_ptr + rows[:, None] * stride_xb + k[None, :],
                     mask=(rows[:, None] < B) & (k[None, :] < K), other=0.0).to(tl.float32)
        ss += tl.sum(xv * xv, axis=1)
    return tl.rsqrt(ss / K + eps)


@triton.jit
def _x_chunk(x_ptr, nw_ptr, stride_xb, rows, k, B, K, rstd, HAS_NORM: tl.constexpr):
    """x[rows, k] in fp32 values of the model dtype, RMSNorm'ed when asked (rounded as the model does)."""
    dt = x_ptr.dtype.element_ty
    xv = tl.load(x_ptr + rows[:, None] * stride_xb + k[None, :],
                 mask=(rows[:, None] < B) & (k[None, :] < K), other=0.0).to(tl.float32)
    if HAS_NORM:
        nw = tl.load(nw_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        xv = ((xv * rstd[:, None]).to(dt).to(tl.float32) * nw[None, :]).to(dt).to(tl.float32)
    return xv                                                              # [BLOCK_B, BLOCK_K]


@triton.jit
def _w_chunk(w_ptr, cols, k, N, K):
    """W[cols, k]: [BLOCK_N, BLOCK_K] (zeros outside the matrix, so a chunk past K reads nothing)."""
    return tl.load(w_ptr + cols[:, None].to(tl.int64) * K + k[None, :],
                   mask=(cols[:, None] < N) & (k[None, :] < K), other=0.0)


@triton.jit
def _accumulate(acc, xv, w, USE_DOT: tl.constexpr, DOT_FP32: tl.constexpr):
    """acc [BLOCK_B, BLOCK_N] += xv [BLOCK_B, BLOCK_K] @ w.T (w [BLOCK_N, BLOCK_K])"""
    if USE_DOT:
        if DOT_FP32:
            acc += tl.dot(xv, tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            acc += tl.dot(xv.to(w.dtype), tl.trans(w))
    else:                                                                  # one row: CUDA cores
        acc += tl.sum(w.to(tl.float32) * xv, axis=1)[None, :]
    return acc


@triton.jit
def _first_chunks(w_ptr, cols, N, w2_ptr, cols2, N2, K, TWO: tl.constexpr, BLOCK_K: tl.constexpr):
    """The first K-chunk of W[cols] (and of W2[cols2] with TWO), [BLOCK_N, BLOCK_K] each. Loaded
    before waiting for the previous kernel (kernels/pdl_triton.py): weights never change during a
    decode step."""
    k = tl.arange(0, BLOCK_K)
    w = _w_chunk(w_ptr, cols, k, N, K)
    w2 = _w_chunk(w2_ptr, cols2, k, N2, K) if TWO else w
    return w, w2


@triton.jit
def _project(x_ptr, nw_ptr, stride_xb, rows, B, K, eps, w, w_ptr, cols, N, w2, w2_ptr, cols2, N2,
             TWO: tl.constexpr, HAS_NORM: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_FP32: tl.constexpr):
    """(acc, acc2) [BLOCK_B, BLOCK_N] fp32: x[rows] (RMSNorm'ed when HAS_NORM) times W[cols].T and,
    with TWO, times W2[cols2].T (gate and up, or the two halves of a RoPE pair), sharing the x
    chunks. w, w2: `_first_chunks`; each iteration loads the next chunk before using this one."""
    rstd = tl.zeros([BLOCK_B], tl.float32)
    if HAS_NORM:
        rstd = _rms_inv(x_ptr, stride_xb, rows, B, K, eps, BLOCK_B, BLOCK_K)
    acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    acc2 = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xv = _x_chunk(x_ptr, nw_ptr, stride_xb, rows, k, B, K, rstd, HAS_NORM)
        w_next = _w_chunk(w_ptr, cols, k + BLOCK_K, N, K)
        acc = _accumulate(acc, xv, w, USE_DOT, DOT_FP32)
        w = w_next
        if TWO:
            w2_next = _w_chunk(w2_ptr, cols2, k + BLOCK_K, N2, K)
            acc2 = _accumulate(acc2, xv, w2, USE_DOT, DOT_FP32)
            w2 = w2_next
    return acc, acc2


@triton.jit
def _project_pipelined(x_ptr, stride_xb, rows, B, k_lo, k_hi, K, w_ptr, cols, N, w2_ptr, cols2, N2,
                       TWO: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       DOT_FP32: tl.constexpr):
    """`_project` for many rows and no RMSNorm (kernels/decode_layer_triton.py), over the slice
    [k_lo, k_hi) of K: one plain loop, which Triton software-pipelines through shared memory
    (num_stages chunks in flight), where `_project`'s register prefetch holds one. A slice is whole
    BLOCK_K chunks unless it ends at K, so masking at K is masking at k_hi."""
    acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    acc2 = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xv = tl.load(x_ptr + rows[:, None] * stride_xb + k[None, :], mask=(rows[:, None] < B) & (k[None, :] < K),
                     other=0.0)
        if DOT_FP32:
            xv = xv.to(tl.float32)
        acc = _accumulate(acc, xv, _w_chunk(w_ptr, cols, k, N, K), True, DOT_FP32)
        if TWO:
            acc2 = _accumulate(acc2, xv, _w_chunk(w2_ptr, cols2, k, N2, K), True, DOT_FP32)
    return acc, acc2


@triton.jit
def _weight_of_tile(pid, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr, N0, N1, N2, END_TO_END: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    """Columns tile `pid` of weights laid end to end (END_TO_END; else of w0 alone): the weight and
    bias it reads, its first column there, that weight's N, and where its columns land in the output."""
    w_ptr = w0_ptr
    b_ptr = b0_ptr
    n_start = pid * BLOCK_N
    N = N0 + pid * 0
    out_col = pid * 0
    if END_TO_END:
        nb0 = tl.cdiv(N0, BLOCK_N)
        nb1 = tl.cdiv(N1, BLOCK_N)
        if pid >= nb0 + nb1:
            w_ptr = w2_ptr
            b_ptr = b2_ptr
            n_start = (pid - nb0 - nb1) * BLOCK_N
            N = N2 + pid * 0
            out_col = N0 + N1 + pid * 0
        elif pid >= nb0:
            w_ptr = w1_ptr
            b_ptr = b1_ptr
            n_start = (pid - nb0) * BLOCK_N
            N = N1 + pid * 0
            out_col = N0 + pid * 0
    return w_ptr, b_ptr, n_start, N, out_col


@triton.jit
def _tile_columns(pid, row0, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr, N0, N1, N2, END_TO_END: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """Output columns tile `pid` of rows [row0, row0 + BLOCK_B): its weight and bias, rows [BLOCK_B],
    weight rows cols [BLOCK_N] and that weight's N, where they land in the output (out_cols
    [BLOCK_N]), and which of the columns exist (cmask [BLOCK_N])."""
    w_ptr, b_ptr, n_start, N, out_col = _weight_of_tile(pid, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr,
                                                        N0, N1, N2, END_TO_END, BLOCK_N)
    rows = row0 + tl.arange(0, BLOCK_B)
    cols = n_start + tl.arange(0, BLOCK_N)
    cmask = cols < N
    return w_ptr, b_ptr, rows, cols, N, out_col + cols, cmask


@triton.jit
def _epilogue_operands(res_ptr, b_ptr, b1_ptr, rows, cols, cmask, out_cols, mask, stride_rb,
                       HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, SILU_MUL: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """The residual [BLOCK_B, BLOCK_N] and biases [BLOCK_N] (gate's and up's with SILU_MUL) the
    epilogue adds, in fp32 (zeros where absent). Loaded before the projection, so that their
    latency hides behind it."""
    r = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    if HAS_RES:
        r = tl.load(res_ptr + rows[:, None] * stride_rb + out_cols[None, :], mask=mask, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_N], tl.float32)
    bias_up = tl.zeros([BLOCK_N], tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        if SILU_MUL:
            bias_up = tl.load(b1_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return r, bias, bias_up


@triton.jit
def _epilogue(acc, acc_up, r, bias, bias_up, out_ptr, rows, out_cols, mask, stride_ob, DT: tl.constexpr,
              SILU_MUL: tl.constexpr, HAS_RES: tl.constexpr):
    """out = acc + bias, or silu(acc + bias) * (acc_up + bias_up), plus the residual, each step
    rounded to the model dtype DT as the PyTorch reference rounds it; stored in out's dtype."""
    y = (acc + bias[None, :]).to(DT).to(tl.float32)                       # F.linear's rounding
    if SILU_MUL:
        gate_act = (y * tl.sigmoid(y)).to(DT).to(tl.float32)
        y = (gate_act * (acc_up + bias_up[None, :]).to(DT).to(tl.float32)).to(DT).to(tl.float32)
    if HAS_RES:
        y = (r + y).to(DT).to(tl.float32)
    tl.store(out_ptr + rows[:, None] * stride_ob + out_cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fused_linear_tile(pid, row0, x_ptr, nw_ptr, res_ptr, out_ptr, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr,
                       B, K, N0, N1, N2, eps, stride_xb, stride_rb, stride_ob,
                       NUM_W: tl.constexpr, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                       HAS_RES: tl.constexpr, SILU_MUL: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       USE_DOT: tl.constexpr, DOT_FP32: tl.constexpr, PIPELINED: tl.constexpr,
                       USE_PDL: tl.constexpr):
    """Output columns tile `pid` (over the weights laid end to end) of rows [row0, row0 + BLOCK_B);
    PIPELINED: `_project_pipelined` (many rows), else `_project`."""
    w_ptr, b_ptr, rows, cols, N, out_cols, cmask = _tile_columns(pid, row0, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr,
                                                                 b2_ptr, N0, N1, N2, NUM_W > 1 and not SILU_MUL,
                                                                 BLOCK_B, BLOCK_N)
    mask = (rows[:, None] < B) & cmask[None, :]
    if not PIPELINED:
        w, w_up = _first_chunks(w_ptr, cols, N, w1_ptr, cols, N, K, SILU_MUL, BLOCK_K)
    wait_for_previous(USE_PDL)                                             # x is the previous kernel's output
    r, bias, bias_up = _epilogue_operands(res_ptr, b_ptr, b1_ptr, rows, cols, cmask, out_cols, mask, stride_rb,
                                          HAS_RES, HAS_BIAS, SILU_MUL, BLOCK_B, BLOCK_N)
    if PIPELINED:
        tl.static_assert(not HAS_NORM, "the pipelined loop takes x already normed")
        acc, acc_up = _project_pipelined(x_ptr, stride_xb, rows, B, 0, K, K, w_ptr, cols, N, w1_ptr, cols, N,
                                         SILU_MUL, BLOCK_B, BLOCK_N, BLOCK_K, DOT_FP32)
    else:
        acc, acc_up = _project(x_ptr, nw_ptr, stride_xb, rows, B, K, eps, w, w_ptr, cols, N, w_up, w1_ptr, cols,
                               N, SILU_MUL, HAS_NORM, BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, DOT_FP32)
    _epilogue(acc, acc_up, r, bias, bias_up, out_ptr, rows, out_cols, mask, stride_ob, x_ptr.dtype.element_ty,
              SILU_MUL, HAS_RES)


@triton.jit
def _fused_linear_kernel(x_ptr, nw_ptr, res_ptr, out_ptr, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr,
                         B, K, N0, N1, N2, eps, stride_xb, stride_rb, stride_ob,
                         NUM_W: tl.constexpr, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                         HAS_RES: tl.constexpr, SILU_MUL: tl.constexpr,
                         BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         USE_DOT: tl.constexpr, DOT_FP32: tl.constexpr, USE_PDL: tl.constexpr):
    _fused_linear_tile(tl.program_id(0), 0, x_ptr, nw_ptr, res_ptr, out_ptr, w0_ptr, w1_ptr, w2_ptr,
                       b0_ptr, b1_ptr, b2_ptr, B, K, N0, N1, N2, eps, stride_xb, stride_rb, stride_ob,
                       NUM_W, HAS_NORM, HAS_BIAS, HAS_RES, SILU_MUL, BLOCK_B, BLOCK_N, BLOCK_K,
                       USE_DOT, DOT_FP32, False, USE_PDL)


def check_launch_args(x: torch.Tensor, weights, biases, who: str) -> bool:
    """What a `_project` kernel needs beyond `check_fused_linear_args` (a ValueError otherwise):
    at most MAX_ROWS rows, unit stride along K, contiguous weights, a bias for every weight or
    for none. Returns whether there are biases."""
    if x.shape[0] > MAX_ROWS:
        raise ValueError(f"{who}: at most {MAX_ROWS} rows, got {x.shape[0]} (use a matmul)")
    if x.stride(1) != 1 or any(not w.is_contiguous() for w in weights):
        raise ValueError(f"{who}: x needs unit stride along K and the weights must be contiguous")
    has_bias = biases is not None and any(b is not None for b in biases)
    if has_bias and any(b is None for b in biases):
        raise ValueError(f"{who}: give a bias for every weight or for none")
    return has_bias


def launch_options(x: torch.Tensor, config: LinearConfig, who: str) -> dict:
    """The block constexprs and launch options of a `_project` kernel for x [B, K] under `config`:
    one row on the CUDA cores, more rows through tl.dot (16-row tiles; fp32 dots under the CPU
    interpreter, whose bf16 dot is wrong)."""
    B = x.shape[0]
    if B > 1 and config.block_n < 16:
        raise ValueError(f"{who}: block_n {config.block_n} < 16 with {B} rows (tl.dot needs 16)")
    return dict(BLOCK_B=1 if B == 1 else 16, BLOCK_N=config.block_n, BLOCK_K=config.block_k, USE_DOT=B > 1,
                DOT_FP32=os.environ.get("TRITON_INTERPRET") == "1" or x.dtype == torch.float32,
                num_warps=config.num_warps, num_stages=config.num_stages)


def fused_linear_triton(x: torch.Tensor, weights, biases=None, *, norm_weight=None, eps: float = 0.0,
                        residual=None, silu_mul: bool = False, out_float: bool = False,
                        config: LinearConfig | None = None) -> torch.Tensor:
    check_fused_linear_args(x, weights, biases, norm_weight, residual, silu_mul)
    has_bias = check_launch_args(x, weights, biases, "fused_linear_triton")
    B, K = x.shape
    Ns = [w.shape[0] for w in weights]
    n_out = Ns[0] if silu_mul else sum(Ns)
    config = config or default_config(B, K, weights_per_column=2 if silu_mul else 1)
    out = torch.empty((B, n_out), dtype=torch.float32 if out_float else x.dtype, device=x.device)
    ws = list(weights) + [weights[0]] * (3 - len(weights))                  # unused slots: any valid pointer
    bs = list(biases) + [biases[0]] * (3 - len(biases)) if has_bias else ws
    res = residual if residual is not None else out
    pdl = pdl_options(x.device)
    grid_n = triton.cdiv(Ns[0], config.block_n) if silu_mul else sum(triton.cdiv(n, config.block_n) for n in Ns)
    _fused_linear_kernel[(grid_n,)](
        x, norm_weight if norm_weight is not None else x, res, out, *ws, *bs,
        B, K, Ns[0], Ns[1] if len(Ns) > 1 else 0, Ns[2] if len(Ns) > 2 else 0, eps,
        x.stride(0), res.stride(0), out.stride(0),
        NUM_W=len(weights), HAS_NORM=norm_weight is not None, HAS_BIAS=has_bias,
        HAS_RES=residual is not None, SILU_MUL=silu_mul,
        **launch_options(x, config, "fused_linear_triton"), **pdl)
    return out

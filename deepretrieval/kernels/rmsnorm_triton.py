"""Triton RMSNorm (+ fused residual add): one program per row, the whole row in registers.

Same signature and results as `deepretrieval.kernels.rmsnorm.rmsnorm_reference`; see that module for the
numerics. Rows up to 64K features; x and residual must share a dtype. Outputs are new tensors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels import as_rows
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous


@triton.jit
def _rmsnorm_row(row, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, stride_x, stride_res, stride_out,
                 stride_res_out, N, eps, HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row `row` (int64) of the output (and of the residual sum)."""
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0).to(tl.float32)
        # round the sum to the activation dtype first, as `x + residual` in torch does
        x = (x + r).to(x_ptr.dtype.element_ty)
        tl.store(res_out_ptr + row * stride_res_out + cols, x, mask=mask)
        x = x.to(tl.float32)
    normed = _rms_normalized(x, x_ptr, w_ptr, cols, mask, N, eps)
    tl.store(out_ptr + row * stride_out + cols, normed.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_normalized(x, x_ptr, w_ptr, cols, mask, N, eps):
    """w * RMSNorm(x) in fp32 for one row x (fp32 holding values of x_ptr's dtype, zero past N), the
    normalised row rounded to that dtype before the weight, as the reference does."""
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / N + eps)
    normed = (x * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
    return tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32) * normed


@triton.jit
def _rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
                    stride_x, stride_res, stride_out, stride_res_out, N, eps,
                    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    _rmsnorm_row(tl.program_id(0).to(tl.int64), x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, stride_x, stride_res,
                 stride_out, stride_res_out, N, eps, HAS_RESIDUAL, BLOCK_N)


def rmsnorm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float,
                   residual: torch.Tensor | None = None):
    N = x.shape[-1]
    if weight.shape != (N,):
        raise ValueError(f"rmsnorm: weight has shape {tuple(weight.shape)}, expected ({N},)")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"rmsnorm: residual {tuple(residual.shape)} {residual.dtype} must match "
                         f"x {tuple(x.shape)} {x.dtype}")
    x2 = as_rows(x)                                                        # [M, N]
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    out2 = out.view(-1, N)
    if residual is None:
        res2 = res_out2 = x2                                               # unused by the kernel
    else:
        res2 = as_rows(residual)
        res_out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        res_out2 = res_out.view(-1, N)
    block_n = triton.next_power_of_2(N)
    pdl = pdl_options(x.device)
    _rmsnorm_kernel[(x2.shape[0],)](
        x2, res2, weight.contiguous(), out2, res_out2,
        x2.stride(0), res2.stride(0), out2.stride(0), res_out2.stride(0), N, eps,
        HAS_RESIDUAL=residual is not None, BLOCK_N=block_n, num_warps=min(max(block_n // 256, 1), 16), **pdl)
    return out if residual is None else (out, res_out)

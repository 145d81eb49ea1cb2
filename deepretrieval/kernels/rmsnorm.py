"""RMSNorm as Llama/Qwen compute it, optionally fused with the residual add before it.

    normed = rmsnorm(x, weight, eps)                                  # [..., N]
    normed, residual = rmsnorm(x, weight, eps, residual=residual)     # residual := x + residual

The statistics are taken in fp32, the normalised activations are cast back to x's dtype and
only then multiplied by the weight, exactly as `Qwen2RMSNorm` / `LlamaRMSNorm` do; the Triton
kernel (kernels/rmsnorm_triton.py) rounds at the same points, so in bf16 it differs from this
reference only where the fp32 sum of squares, taken in another order, tips a rounding.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton


def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                      residual: torch.Tensor | None = None):
    """x: [..., N]; weight: [N]; residual: like x. Returns normed [..., N] in the dtype of
    `weight * x` (HF's promotion), or (normed, x + residual) when a residual is given."""
    if residual is not None:
        x = x + residual
        residual = x
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    out = weight * normed
    return out if residual is None else (out, residual)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    tensors = (x, weight) if residual is None else (x, weight, residual)
    if use_triton(*tensors):
        from deepretrieval.kernels.rmsnorm_triton import rmsnorm_triton
        return rmsnorm_triton(x, weight, eps, residual)
    return rmsnorm_reference(x, weight, eps, residual)

"""A decode-time linear layer with its neighbours folded in: RMSNorm before, bias / SiLU-gate /
residual add after, several weight matrices in one launch. For small batches (a few rows), where
one decode step is hundreds of short kernels and launch overhead costs as much as reading the
weights, this turns a layer's ~16 launches into 4.

    y = fused_linear(x, (wq, wk, wv), (bq, bk, bv), norm_weight=attn_norm.weight, eps=eps)
                                                  # cat(RMSNorm(x) @ W.T + b for each W)   [B, Nq+Nk+Nv]
    h = fused_linear(attn, (wo,), residual=x)     # x + attn @ wo.T                       [B, C]
    a = fused_linear(h, (w_gate, w_up), norm_weight=mlp_norm.weight, eps=eps, silu_mul=True)
                                                  # silu(n @ w_gate.T) * (n @ w_up.T), n = RMSNorm(h)
    logits = fused_linear(x, (w_head,), norm_weight=norm.weight, eps=eps, out_float=True)   # fp32

    x           [B, K]       the activation (model dtype)
    weights     1 to 3 of [N_i, K] (nn.Linear layout, contiguous, x's dtype); with silu_mul exactly 2
                of the same shape (gate, up)
    biases      None, or one per weight (each [N_i] or None)
    norm_weight [K] or None  RMSNorm applied to x first (kernels.rmsnorm's numerics)
    residual    [B, N] or None: added after the projection
    out_float   return fp32 (the values rounded to x's dtype first, as `F.linear(...).float()`)

Numerics are the eager model's, op for op: the normed input is rounded to the model dtype, each
projection (+ bias) is rounded once, SiLU and the product are each rounded, the residual sum is
rounded. The Triton kernel (kernels/fused_linear_triton.py) accumulates in fp32 in another order
than cuBLAS, so in bf16 results differ from this reference by rounding only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from deepretrieval.kernels import use_triton
from deepretrieval.kernels.rmsnorm import rmsnorm_reference

MAX_ROWS = 16          # the Triton kernel's batch limit; larger batches are matmuls, for cuBLAS


def check_fused_linear_args(x, weights, biases, norm_weight, residual, silu_mul) -> None:
    """Raise a ValueError that says what does not fit (shared by the reference and the kernel)."""
    if x.dim() != 2:
        raise ValueError(f"fused_linear: x must be [B, K], got {tuple(x.shape)}")
    K = x.shape[1]
    if not 1 <= len(weights) <= 3 or (silu_mul and len(weights) != 2):
        raise ValueError(f"fused_linear: {len(weights)} weights given; 1 to 3, or exactly 2 with silu_mul")
    for w in weights:
        if w.dim() != 2 or w.shape[1] != K or w.dtype != x.dtype:
            raise ValueError(f"fused_linear: weight {tuple(w.shape)} {w.dtype} does not fit x "
                             f"{tuple(x.shape)} {x.dtype}")
    if silu_mul and weights[0].shape != weights[1].shape:
        raise ValueError("fused_linear: silu_mul needs gate and up weights of one shape")
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"fused_linear: {len(biases)} biases for {len(weights)} weights")
    if norm_weight is not None and norm_weight.shape != (K,):
        raise ValueError(f"fused_linear: norm_weight {tuple(norm_weight.shape)} must be ({K},)")
    n_out = weights[0].shape[0] if silu_mul else sum(w.shape[0] for w in weights)
    if residual is not None and residual.shape != (x.shape[0], n_out):
        raise ValueError(f"fused_linear: residual {tuple(residual.shape)} must be ({x.shape[0]}, {n_out})")


def fused_linear_reference(x: torch.Tensor, weights, biases=None, *, norm_weight=None, eps: float = 0.0,
                           residual=None, silu_mul: bool = False, out_float: bool = False) -> torch.Tensor:
    check_fused_linear_args(x, weights, biases, norm_weight, residual, silu_mul)
    h = x if norm_weight is None else rmsnorm_reference(x, norm_weight, eps)          # [B, K]
    biases = biases if biases is not None else (None,) * len(weights)
    ys = [F.linear(h, w, b) for w, b in zip(weights, biases)]                          # [B, N_i] each
    y = F.silu(ys[0]) * ys[1] if silu_mul else torch.cat(ys, dim=-1)
    if residual is not None:
        y = residual + y
    return y.float() if out_float else y


def fused_linear(x: torch.Tensor, weights, biases=None, *, norm_weight=None, eps: float = 0.0,
                 residual=None, silu_mul: bool = False, out_float: bool = False) -> torch.Tensor:
    """Triton on CUDA for at most MAX_ROWS rows (no grad), the reference elsewhere; same results."""
    tensors = [x, *weights] + [b for b in biases or () if b is not None] \
        + [t for t in (norm_weight, residual) if t is not None]
    if x.shape[0] <= MAX_ROWS and use_triton(*tensors):
        from deepretrieval.kernels.fused_linear_triton import fused_linear_triton
        return fused_linear_triton(x, weights, biases, norm_weight=norm_weight, eps=eps, residual=residual,
                                   silu_mul=silu_mul, out_float=out_float)
    return fused_linear_reference(x, weights, biases, norm_weight=norm_weight, eps=eps, residual=residual,
                                  silu_mul=silu_mul, out_float=out_float)

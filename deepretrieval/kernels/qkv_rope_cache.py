"""The attention input of one decode token in one launch: RMSNorm, the q/k/v projections (+ bias),
RoPE of q and k, and k and v written into the static KV cache.

    q = qkv_rope_cache(x, (wq, wk, wv), (bq, bk, bv), norm_weight, eps,
                       cos, sin, positions, k_cache, v_cache, slot)          # [B, H_q, D]

    x, (wq, wk, wv), biases, norm_weight, eps   as `deepretrieval.kernels.fused_linear` (3 weights; biases may be None)
    cos, sin, positions, k_cache, v_cache, slot as `deepretrieval.kernels.rope_cache` (k_cache [B, H_kv, S, D]
                                                gives H_kv and D; H_q = wq.shape[0] / D)

It is `fused_linear` followed by `rope_cache` (the reference is exactly that), with the same
numerics: the projection rounded to the model dtype, then rotated with kernels.rope's roundings.
Why one kernel: the rope_cache launch between the projection and the attention costs about
2 us of a batch-1 decode layer on an H100 in which the GPU moves no weight byte
(bench/results/logs/h100_decode_step_profile.log). The Triton kernel (kernels/qkv_rope_cache_triton.py)
gives each program the weight rows of both halves of its RoPE pairs, so it can rotate them in
registers and store q, and k and v straight into the cache.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton
from deepretrieval.kernels.fused_linear import fused_linear, fused_linear_reference
from deepretrieval.kernels.rope_cache import rope_cache, rope_cache_reference


def _split_heads(qkv: torch.Tensor, k_cache: torch.Tensor):
    """[B, (H_q + 2 H_kv) D] -> q [B, H_q, D], k and v [B, H_kv, D] (views)."""
    B, (H_kv, D) = qkv.shape[0], (k_cache.shape[1], k_cache.shape[3])
    q, k, v = qkv.split((qkv.shape[1] - 2 * H_kv * D, H_kv * D, H_kv * D), dim=-1)
    return q.view(B, -1, D), k.view(B, H_kv, D), v.view(B, H_kv, D)


def qkv_rope_cache_reference(x, weights, biases, norm_weight, eps: float, cos, sin, positions,
                             k_cache, v_cache, slot) -> torch.Tensor:
    qkv = fused_linear_reference(x, weights, biases, norm_weight=norm_weight, eps=eps)
    return rope_cache_reference(*_split_heads(qkv, k_cache), cos, sin, positions, k_cache, v_cache, slot)


def qkv_rope_cache(x, weights, biases, norm_weight, eps: float, cos, sin, positions,
                   k_cache, v_cache, slot) -> torch.Tensor:
    """The one Triton kernel on CUDA (no grad) for one row; otherwise the two dispatched kernels it
    fuses. (The kernel takes up to MAX_ROWS rows, but at 16 rows it was slower than the two on an
    H100: 12.5 against 11.3 us at Qwen2.5-3B shapes, `python -m bench.kernels --only qkv_rope_cache`.)"""
    tensors = [x, *weights, cos, sin, positions, k_cache, v_cache, slot] \
        + [b for b in biases or () if b is not None] + ([norm_weight] if norm_weight is not None else [])
    if x.shape[0] == 1 and use_triton(*tensors):
        from deepretrieval.kernels.qkv_rope_cache_triton import qkv_rope_cache_triton
        return qkv_rope_cache_triton(x, weights, biases, norm_weight, eps, cos, sin, positions,
                                     k_cache, v_cache, slot)
    qkv = fused_linear(x, weights, biases, norm_weight=norm_weight, eps=eps)
    return rope_cache(*_split_heads(qkv, k_cache), cos, sin, positions, k_cache, v_cache, slot)

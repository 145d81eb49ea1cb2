"""Rotary position embedding applied to q and k in one call (HF "rotate_half" convention:
the two halves of each head, not interleaved pairs, form the rotated pairs).

    q_rot, k_rot = rope(q, k, cos, sin, positions)
    x_rot = apply_rope(x, cos_x, sin_x)      # one tensor, cos/sin already per token (model/transformer.py)

    q          [B, T, H_q, D]   any strides with unit stride along D (e.g. a projection viewed as heads)
    k          [B, T, H_kv, D]  same dtype as q
    cos, sin   [P, D]           tables by absolute position, HF layout cat(freqs, freqs) along D
    positions  [B, T]           integer position of every token, in [0, P) (not checked: that would
                                sync); per sequence because left-padded sequences start at different offsets

Out-of-place: new tensors of q's and k's shapes come back and the inputs are untouched. Writing
in place would save one small write per token at decode, but out-of-place keeps the function
pure (safe on views of fused qkv projections, and the same contract as the differentiable
reference used for training).

Numerics are HF's `apply_rotary_pos_emb`: cos/sin are cast to q's dtype, then
q*cos + rotate_half(q)*sin with every product and the sum rounded to that dtype; the Triton kernel
(kernels/rope_triton.py) rounds at the same points, so on a GPU it matches this reference bit for
bit in bf16. (Triton's CPU interpreter truncates instead of rounding to bf16: test it in fp32.)
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., D] rotated by cos, sin broadcastable to it (cast to x's dtype first): the one
    definition of the rotation, used by `rope_reference` and by the model's forward."""
    rotated = rotate_half(x)      # first: the order in which backward sums x's gradient terms depends on it
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def rope_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos_t = cos[positions].unsqueeze(2)                                   # [B, T, 1, D]
    sin_t = sin[positions].unsqueeze(2)
    return apply_rope(q, cos_t, sin_t), apply_rope(k, cos_t, sin_t)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
         positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    if use_triton(q, k, cos, sin, positions):
        from deepretrieval.kernels.rope_triton import rope_triton
        return rope_triton(q, k, cos, sin, positions)
    return rope_reference(q, k, cos, sin, positions)

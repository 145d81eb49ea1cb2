"""One decode token's q and k rotated (RoPE) and its k and v written into the static KV cache.

    q_rot = rope_cache(q, k, v, cos, sin, positions, k_cache, v_cache, slot)

    q          [B, H, D]        this step's queries (any strides, unit stride along D: e.g. a view
    k, v       [B, H_kv, D]     of one fused qkv projection)
    cos, sin   [P, D]           tables by position (kernels.rope's layout)
    positions  [B]              each row's RoPE position
    k_cache    [B, H_kv, S, D]  one layer's static cache; k_rot and v land at slot `slot`
    v_cache    [B, H_kv, S, D]
    slot       [1] long         on the device, so a CUDA graph replays it as the step advances it
    returns    [B, H, D]        q rotated (a new contiguous tensor)

This is `kernels.rope` followed by two `index_copy_`s, in one launch instead of four or five
(the rotated k is written straight into the cache). Same numerics as kernels.rope.
"""
from __future__ import annotations

import torch

from kernels import use_triton
from kernels.rope import rope_reference


def rope_cache_reference(q, k, v, cos, sin, positions, k_cache, v_cache, slot) -> torch.Tensor:
    q_rot, k_rot = rope_reference(q[:, None], k[:, None], cos, sin, positions[:, None])   # [B, 1, H(_kv), D]
    k_cache.index_copy_(2, slot, k_rot.transpose(1, 2))                   # [B, H_kv, 1, D] at slot
    v_cache.index_copy_(2, slot, v[:, :, None])
    return q_rot[:, 0]


def rope_cache(q, k, v, cos, sin, positions, k_cache, v_cache, slot) -> torch.Tensor:
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    if use_triton(q, k, v, cos, sin, positions, k_cache, v_cache, slot):
        from kernels.rope_cache_triton import rope_cache_triton
        return rope_cache_triton(q, k, v, cos, sin, positions, k_cache, v_cache, slot)
    return rope_cache_reference(q, k, v, cos, sin, positions, k_cache, v_cache, slot)

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

This is `deepretrieval.kernels.rope` followed by two `index_copy_`s, in one launch instead of four or five
(the rotated k is written straight into the cache). Same numerics as kernels.rope.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton
from deepretrieval.kernels.rope import rope_reference


def check_cache_args(who: str, B: int, H_kv: int, D: int, dtype, cos, sin, positions, k_cache, v_cache,
                     slot) -> None:
    """Raise a ValueError that says what does not fit one decode token's k/v of [B, H_kv, D] in `dtype`
    (shared by the Triton launchers that write the cache)."""
    if k_cache.shape[:2] != (B, H_kv) or k_cache.shape[3] != D or v_cache.shape != k_cache.shape \
            or k_cache.stride() != v_cache.stride() or k_cache.dtype != dtype:
        raise ValueError(f"{who}: caches {tuple(k_cache.shape)} / {tuple(v_cache.shape)} {k_cache.dtype} "
                         f"do not fit k [{B}, {H_kv}, {D}] {dtype}")
    if D % 2 or cos.shape[-1] != D or sin.shape != cos.shape or positions.shape != (B,) or slot.shape != (1,):
        raise ValueError(f"{who}: need even D with cos/sin [P, {D}], positions [{B}] and slot [1]")
    if any(t.stride(-1) != 1 for t in (cos, sin, k_cache)):
        raise ValueError(f"{who}: cos, sin and the caches need unit stride along the last dimension")


def rope_cache_reference(q, k, v, cos, sin, positions, k_cache, v_cache, slot) -> torch.Tensor:
    q_rot, k_rot = rope_reference(q[:, None], k[:, None], cos, sin, positions[:, None])   # [B, 1, H(_kv), D]
    k_cache.index_copy_(2, slot, k_rot.transpose(1, 2))                   # [B, H_kv, 1, D] at slot
    v_cache.index_copy_(2, slot, v[:, :, None])
    return q_rot[:, 0]


def rope_cache(q, k, v, cos, sin, positions, k_cache, v_cache, slot) -> torch.Tensor:
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    if use_triton(q, k, v, cos, sin, positions, k_cache, v_cache, slot):
        from deepretrieval.kernels.rope_cache_triton import rope_cache_triton
        return rope_cache_triton(q, k, v, cos, sin, positions, k_cache, v_cache, slot)
    return rope_cache_reference(q, k, v, cos, sin, positions, k_cache, v_cache, slot)

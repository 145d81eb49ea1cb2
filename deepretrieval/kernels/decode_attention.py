"""Attention of one new token per sequence over the static KV cache, with grouped-query heads.

    out = decode_attention(q, k_cache, v_cache, kv_start, kv_end, scale=None)

    q                 [B, H_q, D]          the new token's queries (RoPE applied)
    k_cache, v_cache  [B, H_kv, S_max, D]  one layer's slice of the static cache [L, B, H_kv, S_max, D]
                                           (any strides with unit stride along D); H_q % H_kv == 0
    kv_start, kv_end  [B] int32/int64      sequence b attends to cache positions [kv_start[b], kv_end[b]);
                                           0 <= kv_start <= kv_end <= S_max, not checked (that would sync)
    scale             softmax scale, default D ** -0.5
    out               [B, H_q, D]          q's dtype; zeros for a sequence with no valid key

Why (start, end) per sequence and not a [B, S_max] mask: with left padding every sequence's valid
keys are one contiguous run, so two integers say it all; the sampler already has both (start =
the number of pad tokens of the prompt, constant during generation; end = the shared cache length
including the token being decoded, which it bumps in place each step, so a CUDA graph replays
with no host input). The kernel reads only the valid range instead of a mask over S_max, and it
also covers right-padded or ragged caches. The new token's k/v must be in the cache before the call.

A model that keeps a [B, S_max] key-validity mask converts it with `kv_range_from_mask` after
prefill, then adds 1 to kv_end in place per decoded token.
The reference computes in fp32 and casts the output to q's dtype; the Triton kernel
(kernels/decode_attention_triton.py) accumulates in fp32 too.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton


def decode_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               kv_start: torch.Tensor, kv_end: torch.Tensor,
                               scale: float | None = None) -> torch.Tensor:
    B, H_q, D = q.shape
    H_kv, S = k_cache.shape[1], k_cache.shape[2]
    scale = D ** -0.5 if scale is None else scale
    qf = q.float().reshape(B, H_kv, H_q // H_kv, D)                        # [B, H_kv, G, D]
    scores = torch.einsum("bhgd,bhsd->bhgs", qf, k_cache.float()) * scale  # [B, H_kv, G, S]
    pos = torch.arange(S, device=q.device)
    valid = (pos >= kv_start[:, None]) & (pos < kv_end[:, None])          # [B, S]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)                  # no valid key -> zeros
    out = torch.einsum("bhgs,bhsd->bhgd", probs, v_cache.float())         # [B, H_kv, G, D]
    return out.reshape(B, H_q, D).to(q.dtype)


def kv_range_from_mask(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kv_start, kv_end) int32 [B] from a key-validity mask [B, S] whose True entries form one
    run per row (left or right padding); a row with no True gives an empty range. No host sync."""
    flags = valid.to(torch.int32)
    start = flags.argmax(dim=-1)                                      # first True (argmax: first max)
    end = valid.shape[-1] - flags.flip(-1).argmax(dim=-1)             # one past the last True
    has_any = valid.any(dim=-1)
    return (torch.where(has_any, start, 0).to(torch.int32), torch.where(has_any, end, 0).to(torch.int32))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     kv_start: torch.Tensor, kv_end: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    if use_triton(q, k_cache, v_cache, kv_start, kv_end):
        from deepretrieval.kernels.decode_attention_triton import decode_attention_triton
        return decode_attention_triton(q, k_cache, v_cache, kv_start, kv_end, scale)
    return decode_attention_reference(q, k_cache, v_cache, kv_start, kv_end, scale)

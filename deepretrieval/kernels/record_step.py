"""The bookkeeping at the end of a decode step in one launch: record the sampled tokens, mark
stopped rows, advance the counters.

    record_step(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops, pad_token_id,
                last_tokens=None, bump=())

    ids, logprobs   [B] int64 / fp32   this step's samples
    out_tokens      [B, N] int64       column `step` gets ids for rows not done, pad_token_id for done rows
    out_logprobs    [B, N] fp32        column `step` gets logprobs for rows not done, 0 for done rows
    lengths         [B] int64          += 1 for rows not done
    done            [B] bool           |= ids in stops, for rows not done (a finished row stays finished)
    step            [1] int64          += 1
    stops           [S] int64          stop token ids (S may be 0)
    last_tokens     [B] int64 or None  = ids (the next step's input)
    bump            up to 3 integer tensors of any size, each += 1 (a decoder's positions, cache
                    slot and key ranges)

Everything stays on the device (no sync), so a CUDA graph can hold it. Why a kernel: eager torch
spends about 14 launches here, ~1.6 us each in a captured step on an H100, ~22 us of the 690 us
batch-1 step at Qwen2.5-0.5B shapes (bench/results/logs/h100_decode_step_profile.log). The
Triton kernel (kernels/record_step_triton.py) is one program; the results are integers and
copies, so both paths agree exactly.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton

MAX_BUMP = 3


def check_record_step_args(ids, out_tokens, bump) -> None:
    """Raise a ValueError that says what does not fit (shared by the reference and the kernel)."""
    if ids.dim() != 1 or out_tokens.dim() != 2 or out_tokens.shape[0] != ids.shape[0]:
        raise ValueError(f"record_step: ids {tuple(ids.shape)} do not fit out_tokens {tuple(out_tokens.shape)}")
    if len(bump) > MAX_BUMP or any(t.dtype.is_floating_point for t in bump):
        raise ValueError(f"record_step: at most {MAX_BUMP} integer tensors to bump, got "
                         f"{[t.dtype for t in bump]}")


def record_step_reference(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops, pad_token_id: int,
                          last_tokens=None, bump=()) -> None:
    check_record_step_args(ids, out_tokens, bump)
    alive = ~done
    out_tokens.index_copy_(1, step, torch.where(alive, ids, pad_token_id)[:, None])
    out_logprobs.index_copy_(1, step, torch.where(alive, logprobs, 0.0)[:, None])
    lengths += alive
    # not torch.isin: for many stop ids it sorts and syncs, which a CUDA graph cannot hold
    done |= alive & (ids[:, None] == stops).any(-1)
    step += 1
    if last_tokens is not None:
        last_tokens.copy_(ids)
    for t in bump:
        t += 1


def record_step(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops, pad_token_id: int,
                last_tokens=None, bump=()) -> None:
    """Triton on CUDA, the reference elsewhere; same arguments and results."""
    tensors = [ids, logprobs, out_tokens, out_logprobs, lengths, done, step, *bump]
    if use_triton(*tensors):
        from deepretrieval.kernels.record_step_triton import record_step_triton
        return record_step_triton(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops,
                                  pad_token_id, last_tokens, bump)
    return record_step_reference(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops,
                                 pad_token_id, last_tokens, bump)

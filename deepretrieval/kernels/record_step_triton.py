"""Triton end-of-step bookkeeping: one program does what kernels/record_step.py describes.

Same signature and results as `deepretrieval.kernels.record_step.record_step_reference`. One program reads the
step counter once, walks the rows in blocks, and bumps the counters at the end; with a single
program nothing races on the shared counters.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous
from deepretrieval.kernels.record_step import MAX_BUMP, check_record_step_args


@triton.jit
def _bump(ptr, n, BLOCK: tl.constexpr):
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        v = tl.load(ptr + i, mask=i < n)
        tl.store(ptr + i, v + 1, mask=i < n)


@triton.jit
def _record_step_kernel(ids_ptr, lp_ptr, tok_ptr, lpo_ptr, len_ptr, done_ptr, step_ptr, stops_ptr, last_ptr,
                        bump0_ptr, bump1_ptr, bump2_ptr, B, S, n0, n1, n2, pad, stride_tb, stride_lb,
                        HAS_LAST: tl.constexpr, NUM_BUMP: tl.constexpr, BLOCK_B: tl.constexpr,
                        BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    step = tl.load(step_ptr)
    s = tl.arange(0, BLOCK_S)
    stops = tl.load(stops_ptr + s, mask=s < S, other=-1)                   # no token id is -1
    for r0 in range(0, B, BLOCK_B):
        r = r0 + tl.arange(0, BLOCK_B)
        m = r < B
        ids = tl.load(ids_ptr + r, mask=m, other=0)
        done = tl.load(done_ptr + r, mask=m, other=1) != 0
        alive = (done == 0) & m
        tl.store(tok_ptr + r * stride_tb + step, tl.where(alive, ids, pad), mask=m)
        lp = tl.load(lp_ptr + r, mask=m, other=0.0)
        tl.store(lpo_ptr + r * stride_lb + step, tl.where(alive, lp, 0.0), mask=m)
        length = tl.load(len_ptr + r, mask=m, other=0)
        tl.store(len_ptr + r, length + alive.to(length.dtype), mask=m)
        hit = tl.sum((ids[:, None] == stops[None, :]).to(tl.int32), axis=1) > 0
        tl.store(done_ptr + r, (done | (alive & hit)).to(done_ptr.dtype.element_ty), mask=m)
        if HAS_LAST:
            tl.store(last_ptr + r, ids, mask=m)
    tl.store(step_ptr, step + 1)
    if NUM_BUMP > 0:
        _bump(bump0_ptr, n0, BLOCK_B)
    if NUM_BUMP > 1:
        _bump(bump1_ptr, n1, BLOCK_B)
    if NUM_BUMP > 2:
        _bump(bump2_ptr, n2, BLOCK_B)


def record_step_triton(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops, pad_token_id: int,
                       last_tokens=None, bump=()) -> None:
    check_record_step_args(ids, out_tokens, bump)
    if any(not t.is_contiguous() for t in (ids, logprobs, lengths, done, *bump)) \
            or out_tokens.stride(1) != 1 or out_logprobs.stride(1) != 1:
        raise ValueError("record_step_triton: the per-row tensors and counters must be contiguous")
    B, S = ids.shape[0], stops.numel()
    bumps = list(bump) + [step] * (MAX_BUMP - len(bump))                   # unused slots: any valid pointer
    _record_step_kernel[(1,)](
        ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops if S else ids,
        last_tokens if last_tokens is not None else ids, *bumps, B, S, *(t.numel() for t in bumps),
        pad_token_id, out_tokens.stride(0), out_logprobs.stride(0),
        HAS_LAST=last_tokens is not None, NUM_BUMP=len(bump),
        BLOCK_B=min(1024, triton.next_power_of_2(max(B, max((t.numel() for t in bump), default=1)))),
        BLOCK_S=triton.next_power_of_2(max(S, 1)), num_warps=4, **pdl_options(ids.device))

"""Triton sampler for the greedy and plain-temperature paths: one read of logits and noise.

Same signature and results as `deepretrieval.kernels.sampling.sample_reference` for top_k == 0 and
top_p == 1.0 (see kernels/sampling.py for the contract); top-k/top-p raise here and go through the
reference (`deepretrieval.kernels.sampling.sample` dispatches). Rows need at least one finite logit.

  split   grid (B, num_splits): each program scans one slice of the vocabulary in blocks, keeping
          per lane an online log-sum-exp of z = logits / T and the best race score
          z - log(-log u) with its token and z; then merges its lanes.
  reduce  grid (B,): merges the slices; logprob = z[best] - logsumexp(z).
Ties go to the smallest token id, as torch.argmax, so greedy matches it exactly.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels import parallel_programs
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous

_NO_TOKEN = tl.constexpr(2**31 - 1)     # token of an empty state; jit code reads only constexpr globals


@triton.jit
def _merge(m, s, best, tok, z_at, AXIS: tl.constexpr = 0):
    """Merges partial states (log-sum-exp as max m and sum s of exp(z - m); best score with its
    token and z) along AXIS into one state each (vectors: AXIS 0; [rows, tokens] tiles: AXIS 1);
    ties of the best score go to the smallest token."""
    m_max = tl.max(m, axis=AXIS)
    m_ref = tl.where(m_max == float("-inf"), 0.0, m_max)       # all -inf: s is 0 anyway
    best_max = tl.max(best, axis=AXIS)
    if AXIS == 1:                                              # per-row values against the tile
        tok_min = tl.min(tl.where(best == best_max[:, None], tok, _NO_TOKEN), axis=1)
        s_tot = tl.sum(s * tl.exp(m - m_ref[:, None]), axis=1)
        z_best = tl.sum(tl.where(tok == tok_min[:, None], z_at, 0.0), axis=1)
    else:
        tok_min = tl.min(tl.where(best == best_max, tok, _NO_TOKEN), axis=0)
        s_tot = tl.sum(s * tl.exp(m - m_ref), axis=0)
        z_best = tl.sum(tl.where(tok == tok_min, z_at, 0.0), axis=0)
    return m_ref, s_tot, best_max, tok_min, z_best


@triton.jit
def _race(z, u, temperature):
    """(z / temperature, the exponential race's score of each token): argmax of the score over the
    tokens is a draw from softmax(z / temperature). -inf where z is (masked lanes) or u = 0."""
    z = z / temperature
    return z, z - tl.log(-tl.log(u))


@triton.jit
def _store_state(part_ptr, tok_ptr, at, m, s, best, z_at, tok, mask):
    """Partial state(s) at index `at` of part [.., 4] = (m, s, best, z_at) and tok [..]."""
    tl.store(part_ptr + at * 4, m, mask=mask)
    tl.store(part_ptr + at * 4 + 1, s, mask=mask)
    tl.store(part_ptr + at * 4 + 2, best, mask=mask)
    tl.store(part_ptr + at * 4 + 3, z_at, mask=mask)
    tl.store(tok_ptr + at, tok, mask=mask)


@triton.jit
def _sample_split_kernel(logits_ptr, u_ptr, part_ptr, tok_ptr, stride_lb, stride_ub, V, chunk,
                         temperature, GREEDY: tl.constexpr, BLOCK_V: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    lo = split * chunk
    hi = tl.minimum(lo + chunk, V)
    lanes = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)
    tok = tl.full([BLOCK_V], _NO_TOKEN, tl.int32)
    z_at = tl.zeros([BLOCK_V], tl.float32)
    for v0 in range(lo, hi, BLOCK_V):
        cols = v0 + lanes
        mask = cols < hi
        z = tl.load(logits_ptr + b * stride_lb + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if GREEDY:
            score = z
        else:
            z, score = _race(z, tl.load(u_ptr + b * stride_ub + cols, mask=mask, other=0.5), temperature)
        m_new = tl.maximum(m, z)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.exp(z - m_ref)
        m = m_new
        take = score > best                                      # strict: a lane keeps its first max
        best = tl.where(take, score, best)
        tok = tl.where(take, cols, tok)
        z_at = tl.where(take, z, z_at)
    m, s, best, tok, z_at = _merge(m, s, best, tok, z_at)
    _store_state(part_ptr, tok_ptr, b * num_splits + split, m, s, best, z_at, tok, True)


@triton.jit
def _sample_reduce_kernel(part_ptr, tok_ptr, ids_ptr, logprob_ptr, NUM_SPLITS, BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    b = tl.program_id(0).to(tl.int64)
    sp = tl.arange(0, BLOCK_S)
    mask = sp < NUM_SPLITS
    part = part_ptr + (b * NUM_SPLITS + sp) * 4
    m = tl.load(part, mask=mask, other=float("-inf"))
    s = tl.load(part + 1, mask=mask, other=0.0)
    best = tl.load(part + 2, mask=mask, other=float("-inf"))
    z_at = tl.load(part + 3, mask=mask, other=0.0)
    tok = tl.load(tok_ptr + b * NUM_SPLITS + sp, mask=mask, other=_NO_TOKEN)
    m, s, best, tok, z_at = _merge(m, s, best, tok, z_at)
    tl.store(ids_ptr + b, tok.to(tl.int64))
    tl.store(logprob_ptr + b, z_at - (m + tl.log(s)))


def sample_triton(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float,
                  top_k: int = 0, top_p: float = 1.0, *, num_splits: int | None = None,
                  block_v: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    if top_k > 0 or top_p < 1.0:
        raise ValueError("sample_triton: top-k/top-p are not in the kernel; "
                         "use kernels.sampling.sample, which sends them to the reference")
    B, V = logits.shape
    greedy = temperature == 0
    if not greedy and (uniform is None or uniform.shape != logits.shape or uniform.dtype != torch.float32):
        raise ValueError(f"sample_triton: sampling at temperature {temperature} needs fp32 uniform "
                         f"noise of shape {tuple(logits.shape)}")
    noise = logits if greedy else uniform                       # the greedy kernel never reads it
    if logits.stride(-1) != 1 or noise.stride(-1) != 1:
        raise ValueError("sample_triton: logits and uniform need unit stride along the vocabulary")
    if num_splits is None:
        num_splits = max(1, min(triton.cdiv(parallel_programs(logits.device), B), triton.cdiv(V, block_v)))
    chunk = triton.cdiv(triton.cdiv(V, num_splits), block_v) * block_v
    pdl = pdl_options(logits.device)
    part = torch.empty((B, num_splits, 4), dtype=torch.float32, device=logits.device)
    tok = torch.empty((B, num_splits), dtype=torch.int32, device=logits.device)
    _sample_split_kernel[(B, num_splits)](
        logits, noise, part, tok, logits.stride(0), noise.stride(0), V, chunk,
        1.0 if greedy else float(temperature), GREEDY=greedy, BLOCK_V=block_v, num_warps=4, **pdl)
    ids = torch.empty((B,), dtype=torch.int64, device=logits.device)
    logprobs = torch.empty((B,), dtype=torch.float32, device=logits.device)
    _sample_reduce_kernel[(B,)](part, tok, ids, logprobs, num_splits,
                                BLOCK_S=triton.next_power_of_2(num_splits), num_warps=1, **pdl)
    return ids, logprobs

"""Triton LM head with the sampler in its epilogue: see kernels/head_sample.py for what it computes.

    ids, logprobs = head_sample_triton(x, norm_weight, eps, head_weight, uniform, temperature,
                                       config=None)

Three launches:
  norm     hn = RMSNorm(x)                                    kernels/rmsnorm_triton.py
  tiles    grid (row blocks x vocabulary tiles), the row blocks of a tile side by side so that its
           weights come from L2 after the first: the tile's noise loaded, then its logits hn @ W[tile].T (the pipelined
           projection of kernels/fused_linear_triton.py), rounded to the model dtype as F.linear's
           output, divided by the temperature; each row's tokens in the tile folded into one sampler
           state (log-sum-exp, best race score z - log(-log u), its token and z) with the sampler's
           own merge, written as one partial per (row, tile)
  reduce   per row, the partials merged: ids and logprobs (kernels/sampling_triton.py's reduce)
The sampler's tie rule holds across tiles (the smallest token wins), so greedy picks what
torch.argmax picks over the same logits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from deepretrieval.kernels.fused_linear_triton import _project_pipelined
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous
from deepretrieval.kernels.rmsnorm_triton import rmsnorm_triton
from deepretrieval.kernels.sampling_triton import _merge, _race, _sample_reduce_kernel, _store_state


@dataclass(frozen=True)
class HeadSampleConfig:
    """Tile of the head: at most block_b rows, block_n vocabulary columns, K in block_k chunks.
    block_k None: 128 with one row block, 64 with more (the smaller pipeline lets two programs
    share an SM, so one's epilogue overlaps the other's loads), halved for fp32 activations.
    From `python -m bench.kernels --only head_sample --sweep` on an H100 (docs/LOG.md)."""
    block_b: int = 64
    block_n: int = 128
    block_k: int | None = None
    num_warps: int = 8
    num_stages: int = 4


@triton.jit
def _head_sample_tile_kernel(hn_ptr, w_ptr, u_ptr, part_ptr, tok_ptr, B, K, V, stride_ub, temperature,
                             GREEDY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr, USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    row_blocks = tl.cdiv(B, BLOCK_B)
    tiles = tl.cdiv(V, BLOCK_N)
    tile = pid // row_blocks
    rows = (pid % row_blocks) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = (rows[:, None] < B) & (cols[None, :] < V)
    # the noise first: its latency hides behind the projection (-20 % at 64 rows). No kernel of a
    # decode step writes it (it is refilled before the step), so PDL lets it be read before the wait
    if not GREEDY:
        u = tl.load(u_ptr + rows[:, None].to(tl.int64) * stride_ub + cols[None, :], mask=valid, other=0.5)
    wait_for_previous(USE_PDL)                                    # hn is the norm kernel's output
    acc, _ = _project_pipelined(hn_ptr, K, rows, B, 0, K, K, w_ptr, cols, V, w_ptr, cols, V,
                                False, BLOCK_B, BLOCK_N, BLOCK_K, DOT_FP32)   # [BLOCK_B, BLOCK_N] fp32
    z = tl.where(valid, acc.to(hn_ptr.dtype.element_ty).to(tl.float32), float("-inf"))   # the logits
    if GREEDY:
        score = z
    else:
        z, score = _race(z, u, temperature)
    # each (row, token) is a sampler state of its own: max z, sum exp(z - z) = 1, its score
    ones = tl.full([BLOCK_B, BLOCK_N], 1.0, tl.float32)
    tokens = tl.broadcast_to(cols[None, :], [BLOCK_B, BLOCK_N])
    m, s, best, tok, z_at = _merge(z, ones, score, tokens, z, 1)  # [BLOCK_B] each
    _store_state(part_ptr, tok_ptr, rows.to(tl.int64) * tiles + tile, m, s, best, z_at, tok, rows < B)


def head_sample_triton(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, head_weight: torch.Tensor,
                       uniform: torch.Tensor | None, temperature: float, top_k: int = 0, top_p: float = 1.0, *,
                       config: HeadSampleConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if top_k > 0 or top_p < 1.0:
        raise ValueError("head_sample_triton: top-k/top-p are not in the kernel; "
                         "use kernels.head_sample.head_sample, which sends them to the reference")
    B, C = x.shape
    V = head_weight.shape[0]
    if head_weight.shape != (V, C) or norm_weight.shape != (C,) or head_weight.dtype != x.dtype:
        raise ValueError(f"head_sample: head {tuple(head_weight.shape)} {head_weight.dtype} and norm "
                         f"{tuple(norm_weight.shape)} do not fit x {tuple(x.shape)} {x.dtype}")
    if not x.is_contiguous() or not head_weight.is_contiguous():
        raise ValueError("head_sample: x and the head weight must be contiguous")
    greedy = temperature == 0
    if not greedy and (uniform is None or uniform.shape != (B, V) or uniform.dtype != torch.float32
                       or uniform.stride(1) != 1):
        raise ValueError(f"head_sample: sampling at temperature {temperature} needs fp32 uniform noise "
                         f"of shape ({B}, {V}) with unit stride along the vocabulary")
    config = config or HeadSampleConfig()
    block_b = min(config.block_b, max(16, triton.next_power_of_2(B)))
    row_blocks = triton.cdiv(B, block_b)
    block_k = config.block_k or (128 if row_blocks == 1 else 64) * 2 // x.element_size()
    hn = rmsnorm_triton(x, norm_weight, eps)                                          # [B, C]
    tiles = triton.cdiv(V, config.block_n)
    part = torch.empty((B, tiles, 4), dtype=torch.float32, device=x.device)
    tok = torch.empty((B, tiles), dtype=torch.int32, device=x.device)
    pdl = pdl_options(x.device)
    noise = x if greedy else uniform                                                  # greedy never reads it
    _head_sample_tile_kernel[(row_blocks * tiles,)](
        hn, head_weight, noise, part, tok, B, C, V, noise.stride(0), 1.0 if greedy else float(temperature),
        GREEDY=greedy, BLOCK_B=block_b, BLOCK_N=config.block_n, BLOCK_K=block_k,
        DOT_FP32=os.environ.get("TRITON_INTERPRET") == "1" or x.dtype == torch.float32,
        num_warps=config.num_warps, num_stages=config.num_stages, **pdl)
    ids = torch.empty((B,), dtype=torch.int64, device=x.device)
    logprobs = torch.empty((B,), dtype=torch.float32, device=x.device)
    _sample_reduce_kernel[(B,)](part, tok, ids, logprobs, tiles, BLOCK_S=triton.next_power_of_2(tiles),
                                num_warps=4, **pdl)
    return ids, logprobs

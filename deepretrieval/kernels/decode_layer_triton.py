"""Triton decoder layer for many decode rows: see kernels/decode_layer.py for what it computes.

    out = decode_layer_triton(x, weights, eps, cos, sin, positions, k_cache, v_cache, slot,
                              kv_start, kv_end, sync=sync, persistent=False, config=None)
    out, out_normed = decode_layer_triton(..., normed=xn, next_norm=next_weights.attn_norm)

One kernel, up to eight stages, each a loop of the launched programs over that stage's tiles:

  1 norm       xn = RMSNorm(x), unless given as `normed`                       rmsnorm rows
  2 qkv        xn @ [wq; wk; wv].T + b -> qkv [B, (H + 2 H_kv) D]              fused_linear tiles
  3 attention  per (row, KV head): RoPE of its G query heads and its key, this step's k/v into the
               cache at `slot` (rope_cache), then attention over [kv_start, kv_end) (decode
               attention's split tile, one split) -> attn [B, H D]
  4 o          x + attn @ wo.T -> h [B, C]                                     fused_linear tiles
  5 norm       hn = RMSNorm(h)                                                 rmsnorm rows
  6 gate/up    silu(hn @ gate.T) * (hn @ up.T) -> act [B, F]                   fused_linear tiles
  7 down       h + act @ down.T -> out [B, C]                                  fused_linear tiles
               or, split along K so that its tiles fill the SMs (`down_splits`), fp32 partials
               [splits, B, C] (not with stream-K, below, which splits K its own way)
  8 rows       split: out = h + (sum of the partials + bias), in order (deterministic); with
               `next_norm`: out_normed = RMSNorm(out) by that weight, the next layer's stage 1 (so a
               stack of layers, kernels.decode_layer.decode_layers, runs its norms here)   rows

The tiles are the per-op kernels' own bodies (`_rmsnorm_row`, `_fused_linear_tile` and its parts,
`_rope_cache_heads`, `_attention_split_tile`), so the numerics are theirs. The norms are stages of
their own because a projection whose loop also normalises its input was not pipelined by Triton
(qkv 11.3 us against o's 3.1 at Qwen2.5-0.5B shapes, 64 rows, an H100). A fused_linear tile takes
BLOCK_B rows (up to `LayerConfig.block_rows`) and BLOCK_N columns; more rows take more row blocks.

Staged (the default): one launch per stage, each with as many programs as the stage has tiles, under
PDL (kernels/pdl_triton.py). Persistent (`persistent=True`): one launch of
`LayerConfig.programs_per_sm` programs per SM (1; two fit beside each other with num_stages=2). Each
stage has a queue: a program takes the next tile with an atomic counter (`_claim`), moves to the
next stage's queue when it is empty, and before running a tile waits only until what the tile reads
is counted done (`_wait_until`): all of the previous stage, except that a down tile waits only for
the gate/up tiles of its K split. So a program with nothing left in a stage starts the next one's
tile (and its L2 prefetch, with `prefetch`) while the stage finishes. Tiles are taken in stage
order, so every tile waited for was taken by a running program: nothing needs all programs resident,
as the grid barrier this replaced did (measured on an H100 with the barrier: 46.4 us a 0.5B layer
against 41.6 staged; with the queues 42.3 against 41.1, and 56.5 with two programs a SM). The last
program out zeroes the counters (`sync`, LAYER_SYNC_WORDS int32) for the next launch. The
interpreter runs programs one after another, so the first takes every tile; the tile functions are
shared, so both modes run the same code.

Stream-K (`LayerConfig.stream_k`, opt-in, not yet timed on a GPU): a projection stage with fewer
tiles than SMs leaves SMs idle while it streams its weights (gate/up at Qwen2.5-0.5B, 64 rows: 76
tiles for an H100's 132 SMs; split-K into 2-4 parts gave 152-304 tiles, a second wave mostly
empty, and lost). With stream-K the stage's (tile, K block) units are cut into one even share per
SM (`stream_k_items`): 532 units of gate/up make 132 items of 4 or 5. A tile cut between items is
finished by the item that holds its last K block, which adds the fp32 partials the others stored
(`_projection_item`; in K order, so every launch sums the same way). The items wait for each other
(a ready flag per item in `sync` after the counters, reset by its reader), so all must be resident:
at most one per SM. Both launch modes run it, with the same bits. The same stages apply to q/k/v, o
and down (stages 2, 4, 6, 7).

The tiles, split-K, key block, warps and pipeline depth are a `LayerConfig`;
DEEPRETRIEVAL_LAYER_CONFIG="KEY=VALUE ..." changes them without editing code (`layer_config_from_env`).
`prefetch` names stages whose programs, launched early by PDL, ask L2 for their tile's weight rows
(the attention: its row's cached keys and values) before they wait (`_prefetch_stage`). Off by
default: on an H200 all five stages took the batch-64 rollout from 56.4k to 57.7k tok/s at
Qwen2.5-0.5B, whose layer fits in L2, and from 17.9k to 16.0k at 3B, whose gate/up and down
slabs evict each other (docs/LOG.md).

Measured on an H100, 64 rows, context 512, weights from HBM (a layer in isolation,
`python -m bench.kernels --only decode_layer`): Qwen2.5-0.5B 41.6 us staged, 40.6 inside a stack
(its norm handed on), 46.4 persistent (the grid barrier); 3B 96.0, 95.0, 104.7. Stage times (staged launches, with the
earlier 16x256 down tiles in 3 splits and 64-key blocks): 0.5B norm 1.5, qkv 3.3, attention 8.6,
o 3.2, norm 1.5, gate/up 10.2, down 8.5, split sum 1.7 us; 3B 1.6, 7.7, 11.3, 5.1, 1.6, 36.4, 23.0
(docs/LOG.md).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, fields, replace

import torch
import triton
import triton.language as tl

from deepretrieval.kernels import parallel_programs
from deepretrieval.kernels.decode_attention_triton import _attention_split_tile
from deepretrieval.kernels.decode_layer import LAYER_SYNC_WORDS
from deepretrieval.kernels.fused_linear_triton import (_epilogue, _epilogue_operands, _fused_linear_tile,
                                                       _project_pipelined, _tile_columns, _weight_of_tile)
from deepretrieval.kernels.pdl_triton import pdl_options, prefetch_l2, wait_for_previous
from deepretrieval.kernels.rope_cache import check_cache_args
from deepretrieval.kernels.rmsnorm_triton import _rms_normalized, _rmsnorm_row
from deepretrieval.kernels.rope_cache_triton import _rope_cache_heads

ALL_STAGES = 0
STAGES = (1, 2, 3, 4, 5, 6, 7, 8)
PREFETCH_STAGES = (2, 3, 4, 6, 7)       # those that read weights or the cache (`_prefetch_stage`)


# The kernel's state, LAYER_SYNC_WORDS int32 zeros between launches (kernels/decode_layer.py):
CLAIMED = tl.constexpr(0)       # + stage: how many of the stage's tiles programs have taken
DONE = tl.constexpr(10)         # + stage: how many of them are finished
SPLIT_DONE = tl.constexpr(20)   # + split: gate/up tiles finished that the down projection's K split reads (<= 8)
EXITED = tl.constexpr(30)       # programs that have run out of tiles
WAIT_FAILED = tl.constexpr(31)  # under the interpreter: a tile waited for tiles not run (kept; the host raises)
COUNTERS = tl.constexpr(32)     # the words above, zeroed by the persistent launch's last program out
READY = tl.constexpr(32)        # + work item: its partial sums are stored (stream-K); reset by the item adding them
STREAM_K_MAX_ITEMS = LAYER_SYNC_WORDS - COUNTERS.value
STREAM_K_STAGES = (2, 4, 6, 7)  # the projections (`_projection_item`)


@triton.jit
def _claim(sync_ptr, stage):
    """The next tile of `stage` for this program to run (>= the stage's tiles when none is left)."""
    return tl.atomic_add(sync_ptr + CLAIMED + stage, 1, sem="relaxed", scope="gpu")


@triton.jit
def _wait_until(sync_ptr, counter, need, INTERPRETED: tl.constexpr):
    """Spin until sync_ptr[counter] >= need; the writes of the tiles counted there are then visible.
    The interpreter runs programs one after another, so there the count must already be reached:
    a wrong count sets WAIT_FAILED (the launcher raises) instead of spinning for ever."""
    counter_ptr = sync_ptr + counter
    if INTERPRETED:
        if tl.atomic_add(counter_ptr, 0) < need:
            tl.atomic_xchg(sync_ptr + WAIT_FAILED, 1)
    else:
        while tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu") < need:
            pass
    tl.debug_barrier()


@triton.jit
def _count_done(counter_ptr):
    """Count this program's tile, after all its threads' writes."""
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")


@triton.jit
def _exit(sync_ptr, num_programs):
    """The last program out zeroes the counters for the next launch: every other one has finished."""
    tl.debug_barrier()
    if tl.atomic_add(sync_ptr + EXITED, 1, sem="acq_rel", scope="gpu") == num_programs - 1:
        words = tl.arange(0, COUNTERS)
        tl.store(sync_ptr + words, tl.zeros([COUNTERS], tl.int32), mask=words < WAIT_FAILED)


@triton.jit
def _norm_row(row, x_ptr, w_ptr, out_ptr, C, eps, BLOCK_C: tl.constexpr):
    """out[row] = RMSNorm(x[row]) of x [B, C] (contiguous)."""
    _rmsnorm_row(tl.cast(row, tl.int64), x_ptr, x_ptr, w_ptr, out_ptr, out_ptr, C, 0, C, 0, C, eps, False, BLOCK_C)


@triton.jit
def _prefetch_weight_rows(w_ptr, first_row, N, K, k_lo, k_hi, BLOCK_N: tl.constexpr):
    """L2 prefetch of rows [first_row, first_row + BLOCK_N) of w [N, K], columns [k_lo, k_hi): a tile's weights."""
    size = w_ptr.dtype.element_ty.itemsize
    prefetch_l2(w_ptr + first_row.to(tl.int64) * K + k_lo, tl.minimum(BLOCK_N, N - first_row), (k_hi - k_lo) * size,
                K * size, 128)


@triton.jit
def _prefetch_stage(pid, STAGE: tl.constexpr, wq_ptr, wk_ptr, wv_ptr, wo_ptr, gate_ptr, up_ptr, down_ptr, kc_ptr,
                    vc_ptr, start_ptr, end_ptr, C, FF, NQ, NKV, H_KV, stride_cb, stride_ch, stride_cs,
                    cols_qkv, cols_o, cols_gate_up, cols_down, per_split,
                    BN_QKV: tl.constexpr, BN_O: tl.constexpr, BN_GATE_UP: tl.constexpr, BN_DOWN: tl.constexpr,
                    DOWN_SPLITS: tl.constexpr):
    """L2 prefetch of what tile `pid` of stage STAGE reads from HBM and no kernel of the step
    writes: its weight rows, or (attention) its row's cached keys and values. A staged launch's
    programs issue it before their PDL wait (they start while the stage before runs), the persistent
    launch's before waiting for a tile's inputs, so these bytes move while the stage before computes
    instead of after it. The attention reads its row's key range before the
    wait: the step's record kernel writes kv_end, but at least two launches earlier, and a launch
    finishes before the second one after it starts (kernels/pdl_triton.py); a prefetch is a hint
    in any case and changes no result."""
    if STAGE == 2:                                       # as `_qkv_tile` chooses its weight
        w_ptr, _, first, N, _ = _weight_of_tile(pid % cols_qkv, wq_ptr, wk_ptr, wv_ptr, wq_ptr, wk_ptr, wv_ptr,
                                                NQ, NKV, NKV, True, BN_QKV)
        _prefetch_weight_rows(w_ptr, first, N, C, 0, C, BN_QKV)
    if STAGE == 3:
        b = (pid // H_KV).to(tl.int64)
        start = tl.load(start_ptr + b).to(tl.int64)
        keys = tl.maximum(tl.load(end_ptr + b).to(tl.int64) - start, 0)
        at = b * stride_cb + (pid % H_KV) * stride_ch + start * stride_cs
        size = kc_ptr.dtype.element_ty.itemsize
        prefetch_l2(kc_ptr + at, 1, keys * stride_cs * size, 0, 128)
        prefetch_l2(vc_ptr + at, 1, keys * stride_cs * size, 0, 128)
    if STAGE == 4:
        _prefetch_weight_rows(wo_ptr, (pid % cols_o) * BN_O, C, NQ, 0, NQ, BN_O)
    if STAGE == 6:
        first = (pid % cols_gate_up) * BN_GATE_UP
        _prefetch_weight_rows(gate_ptr, first, FF, C, 0, C, BN_GATE_UP)
        _prefetch_weight_rows(up_ptr, first, FF, C, 0, C, BN_GATE_UP)
    if STAGE == 7:                                       # the tile's K range, as stage 7 splits it
        k_lo = (pid % DOWN_SPLITS) * per_split
        first = ((pid // DOWN_SPLITS) % cols_down) * BN_DOWN
        _prefetch_weight_rows(down_ptr, first, C, FF, k_lo, tl.minimum(k_lo + per_split, FF), BN_DOWN)


@triton.jit
def _attention_tile(t, qkv_ptr, q_ptr, attn_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr, slot_ptr, start_ptr,
                    end_ptr, NQ, NKV, H_Q, H_KV, qk_scale_log2, stride_cos, stride_sin, stride_cb, stride_ch,
                    stride_cs, HALF: tl.constexpr, G: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_G: tl.constexpr,
                    BLOCK_S: tl.constexpr):
    """Stage 3, tile t = (row, KV head): RoPE, k/v into the cache, attention."""
    b = (t // H_KV).to(tl.int64)
    h = t % H_KV
    n_qkv = NQ + 2 * NKV
    _rope_cache_heads(b, h * G, G, h, 1, qkv_ptr, qkv_ptr + NQ, qkv_ptr + NQ + NKV, cos_ptr, sin_ptr,
                      pos_ptr, kc_ptr, vc_ptr, slot_ptr, q_ptr, H_Q, HALF, n_qkv, 2 * HALF, n_qkv, 2 * HALF,
                      n_qkv, 2 * HALF, stride_cb, stride_ch, stride_cs, stride_cos, stride_sin,
                      BLOCK_H, HALF)
    tl.debug_barrier()          # the rotated q and the new k/v are read back by other threads
    _attention_split_tile(b, h, 0, q_ptr, kc_ptr, vc_ptr, start_ptr, end_ptr, attn_ptr, attn_ptr,
                          H_Q * 2 * HALF, 2 * HALF, stride_cb, stride_ch, stride_cs, stride_cb, stride_ch,
                          stride_cs, H_Q * 2 * HALF, 2 * HALF, 0, 0, 0, qk_scale_log2, G, 2 * HALF,
                          BLOCK_G, BLOCK_S, 1)


@triton.jit
def _stream_k_share(item, items, total):
    """Units [lo, hi) of work item `item`: `items` items share `total` units evenly, in order."""
    return item * total // items, (item + 1) * total // items


@triton.jit
def _stream_k_item_of(unit, items, total):
    """The work item whose share holds `unit` (the largest item whose share starts at or before it)."""
    return ((unit + 1) * items - 1) // total


@triton.jit
def _add_stored_partials(acc, acc_up, first_item, item, here, here_up, size, sync_ptr, TWO: tl.constexpr,
                         INTERPRETED: tl.constexpr):
    """acc (and acc_up) [BLOCK_B, BLOCK_N], a tile's last K range, after the partial sums that items
    [first_item, item) stored for its earlier K ranges, added in K order (so every step sums in the same
    order); each of those items' READY flag reset for the next launch (one item reads each)."""
    total = tl.zeros_like(acc)
    total_up = tl.zeros_like(acc_up)
    for j in range(first_item, item):
        _wait_until(sync_ptr, READY + j, 1, INTERPRETED)
        # from L2 (.cg): this SM's L1 may still hold what an earlier stage stored at the same place
        total += tl.load(here + j * size, cache_modifier=".cg")
        if TWO:
            total_up += tl.load(here_up + j * size, cache_modifier=".cg")
        tl.atomic_xchg(sync_ptr + READY + j, 0, sem="relaxed", scope="gpu")
    return total + acc, total_up + acc_up


@triton.jit
def _linear_piece(t, row0, k_lo, k_hi, item, first_item, final, x_ptr, res_ptr, out_ptr, w0_ptr, w1_ptr, w2_ptr,
                  b0_ptr, b1_ptr, b2_ptr, partial_ptr, sync_ptr, B, K, N0, N1, N2, stride_xb, stride_rb, stride_ob,
                  NUM_W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, SILU_MUL: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr,
                  SPLIT: tl.constexpr, INTERPRETED: tl.constexpr):
    """Columns tile t (over the weights laid end to end, as `_fused_linear_tile`) of rows [row0,
    row0 + BLOCK_B), its K range [k_lo, k_hi) of x already normed. Without SPLIT the range is all
    of K and the tile's output is written. With SPLIT (stream-K) a `final` range (the tile's last)
    first adds the partials of items [first_item, item); any other range stores its fp32 partial
    sums as item `item`'s (partial_ptr [items, 2, BLOCK_B, BLOCK_N]) and flags them READY."""
    w_ptr, b_ptr, rows, cols, N, out_cols, cmask = _tile_columns(t, row0, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr,
                                                                 b2_ptr, N0, N1, N2, NUM_W > 1 and not SILU_MUL,
                                                                 BLOCK_B, BLOCK_N)
    mask = (rows[:, None] < B) & cmask[None, :]
    dt = x_ptr.dtype.element_ty
    r, bias, bias_up = _epilogue_operands(res_ptr, b_ptr, b1_ptr, rows, cols, cmask, out_cols, mask, stride_rb,
                                          HAS_RES, HAS_BIAS, SILU_MUL, BLOCK_B, BLOCK_N)
    acc, acc_up = _project_pipelined(x_ptr, stride_xb, rows, B, k_lo, k_hi, K, w_ptr, cols, N, w1_ptr, cols, N,
                                     SILU_MUL, BLOCK_B, BLOCK_N, BLOCK_K, DOT_FP32)
    if SPLIT:
        size = 2 * BLOCK_B * BLOCK_N                                       # one item's partials
        here = partial_ptr + tl.arange(0, BLOCK_B)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        here_up = here + BLOCK_B * BLOCK_N
        if final:
            acc, acc_up = _add_stored_partials(acc, acc_up, first_item, item, here, here_up, size, sync_ptr,
                                               SILU_MUL, INTERPRETED)
            _epilogue(acc, acc_up, r, bias, bias_up, out_ptr, rows, out_cols, mask, stride_ob, dt, SILU_MUL, HAS_RES)
        else:
            tl.store(here + item * size, acc)
            if SILU_MUL:
                tl.store(here_up + item * size, acc_up)
            _count_done(sync_ptr + READY + item)
    else:
        _epilogue(acc, acc_up, r, bias, bias_up, out_ptr, rows, out_cols, mask, stride_ob, dt, SILU_MUL, HAS_RES)


@triton.jit
def _projection_piece(S: tl.constexpr, t, k_lo, k_hi, item, first_item, final, xn_ptr, qkv_ptr, attn_ptr, x_ptr,
                      h_ptr, hn_ptr, act_ptr, out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr,
                      gate_ptr, up_ptr, down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, stream_k_ptr, sync_ptr,
                      B, C, FF, NQ, NKV, HAS_QKV_BIAS: tl.constexpr, HAS_O_BIAS: tl.constexpr,
                      HAS_MLP_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BN_QKV: tl.constexpr, BK_QKV: tl.constexpr,
                      BN_O: tl.constexpr, BK_O: tl.constexpr, BN_GATE_UP: tl.constexpr, BK_GATE_UP: tl.constexpr,
                      BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr, DOT_FP32: tl.constexpr, SPLIT: tl.constexpr,
                      INTERPRETED: tl.constexpr):
    """Tile t's K range [k_lo, k_hi) of projection stage S (`_linear_piece`):
      2 qkv      qkv = xn @ [wq; wk; wv].T + b
      4 o        h = x + attn @ wo.T
      6 gate/up  act = silu(hn @ gate.T) * (hn @ up.T)
      7 down     out = h + act @ down.T (stream-K only: else `_down_tile`)"""
    if S == 2:
        cols = tl.cdiv(NQ, BN_QKV) + 2 * tl.cdiv(NKV, BN_QKV)
        _linear_piece(t % cols, (t // cols) * BLOCK_B, k_lo, k_hi, item, first_item, final, xn_ptr, xn_ptr, qkv_ptr,
                      wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, stream_k_ptr, sync_ptr, B, C, NQ, NKV, NKV,
                      C, 0, NQ + 2 * NKV, 3, HAS_QKV_BIAS, False, False, BLOCK_B, BN_QKV, BK_QKV, DOT_FP32, SPLIT,
                      INTERPRETED)
    if S == 4:
        cols = tl.cdiv(C, BN_O)
        _linear_piece(t % cols, (t // cols) * BLOCK_B, k_lo, k_hi, item, first_item, final, attn_ptr, x_ptr, h_ptr,
                      wo_ptr, wo_ptr, wo_ptr, bo_ptr, bo_ptr, bo_ptr, stream_k_ptr, sync_ptr, B, NQ, C, 0, 0,
                      NQ, C, C, 1, HAS_O_BIAS, True, False, BLOCK_B, BN_O, BK_O, DOT_FP32, SPLIT, INTERPRETED)
    if S == 6:
        cols = tl.cdiv(FF, BN_GATE_UP)
        _linear_piece(t % cols, (t // cols) * BLOCK_B, k_lo, k_hi, item, first_item, final, hn_ptr, hn_ptr, act_ptr,
                      gate_ptr, up_ptr, gate_ptr, b_gate_ptr, b_up_ptr, b_gate_ptr, stream_k_ptr, sync_ptr, B, C, FF,
                      FF, 0, C, 0, FF, 2, HAS_MLP_BIAS, False, True, BLOCK_B, BN_GATE_UP, BK_GATE_UP, DOT_FP32,
                      SPLIT, INTERPRETED)
    if S == 7:
        cols = tl.cdiv(C, BN_DOWN)
        _linear_piece(t % cols, (t // cols) * BLOCK_B, k_lo, k_hi, item, first_item, final, act_ptr, h_ptr, out_ptr,
                      down_ptr, down_ptr, down_ptr, b_down_ptr, b_down_ptr, b_down_ptr, stream_k_ptr, sync_ptr, B, FF,
                      C, 0, 0, FF, C, C, 1, HAS_MLP_BIAS, True, False, BLOCK_B, BN_DOWN, BK_DOWN, DOT_FP32, SPLIT,
                      INTERPRETED)


@triton.jit
def _projection_geometry(S: tl.constexpr, B, C, FF, NQ, NKV, BLOCK_B: tl.constexpr, BN_QKV: tl.constexpr,
                         BK_QKV: tl.constexpr, BN_O: tl.constexpr, BK_O: tl.constexpr, BN_GATE_UP: tl.constexpr,
                         BK_GATE_UP: tl.constexpr, BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr):
    """Projection stage S's tiles (row blocks x column tiles), K, and K block."""
    row_blocks = tl.cdiv(B, BLOCK_B)
    tiles = row_blocks * tl.cdiv(FF, BN_GATE_UP)
    K = C
    block_k = BK_GATE_UP
    if S == 2:
        tiles = row_blocks * (tl.cdiv(NQ, BN_QKV) + 2 * tl.cdiv(NKV, BN_QKV))
        block_k = BK_QKV
    if S == 4:
        tiles = row_blocks * tl.cdiv(C, BN_O)
        K = NQ
        block_k = BK_O
    if S == 7:
        tiles = row_blocks * tl.cdiv(C, BN_DOWN)
        K = FF
        block_k = BK_DOWN
    return tiles, K, block_k


@triton.jit
def _projection_items(S: tl.constexpr, items, B, C, FF, NQ, NKV, BLOCK_B: tl.constexpr, BN_QKV: tl.constexpr,
                      BK_QKV: tl.constexpr, BN_O: tl.constexpr, BK_O: tl.constexpr, BN_GATE_UP: tl.constexpr,
                      BK_GATE_UP: tl.constexpr, BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr, STREAM_K: tl.constexpr):
    """How many work items projection stage S has: its tiles, or with stream-K `items` (at most one
    per (tile, K block) unit)."""
    tiles, K, block_k = _projection_geometry(S, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                                             BK_GATE_UP, BN_DOWN, BK_DOWN)
    if STREAM_K & (1 << S) != 0:
        tiles = tl.minimum(items, tiles * tl.cdiv(K, block_k))
    return tiles


@triton.jit
def _projection_item(S: tl.constexpr, item, items, per_split, xn_ptr, qkv_ptr, attn_ptr, x_ptr, h_ptr, hn_ptr,
                     act_ptr, out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr, gate_ptr, up_ptr,
                     down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, stream_k_ptr, sync_ptr, B, C, FF, NQ, NKV,
                     HAS_QKV_BIAS: tl.constexpr, HAS_O_BIAS: tl.constexpr, HAS_MLP_BIAS: tl.constexpr,
                     BLOCK_B: tl.constexpr, BN_QKV: tl.constexpr, BK_QKV: tl.constexpr, BN_O: tl.constexpr,
                     BK_O: tl.constexpr, BN_GATE_UP: tl.constexpr, BK_GATE_UP: tl.constexpr, BN_DOWN: tl.constexpr,
                     BK_DOWN: tl.constexpr, STREAM_K: tl.constexpr, COUNT_SPLITS: tl.constexpr,
                     DOT_FP32: tl.constexpr, INTERPRETED: tl.constexpr):
    """Work item `item` of projection stage S (2 qkv, 4 o, 6 gate/up, 7 down). Without stream-K for S
    (bit S of STREAM_K) the item is a tile and all of its K. With it, the stage's (tile, K block)
    units are shared evenly by the stage's `items` work items (`_projection_items`) in order
    (stream-K, Osama et al. 2023), so that a stage with fewer tiles than SMs (gate/up at
    Qwen2.5-0.5B: 76 tiles for 132 SMs) still keeps every SM reading weights; a tile cut between
    items is finished by the item holding its last K block, which adds the others' stored
    partials. An item runs its tiles last to first: the K range it shares with the next item is
    stored first (the next item finishes that tile at its own end), and the range it finishes,
    shared with the item before, comes last, long after that item stored its part at its start.
    COUNT_SPLITS (persistent launch): count each finished gate/up tile for the down splits that
    read it."""
    tiles, K, block_k = _projection_geometry(S, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                                             BK_GATE_UP, BN_DOWN, BK_DOWN)
    if STREAM_K & (1 << S) != 0:
        units = tl.cdiv(K, block_k)
        total = tiles * units
        lo, hi = _stream_k_share(item, items, total)
        last_tile = (hi - 1) // units
        for t in range(last_tile, lo // units - 1, -1):
            u_lo = tl.maximum(lo, t * units)
            u_hi = tl.minimum(hi, (t + 1) * units)
            final = u_hi == (t + 1) * units
            first_item = _stream_k_item_of(t * units, items, total)
            k_lo = (u_lo - t * units) * block_k
            k_hi = tl.minimum((u_hi - t * units) * block_k, K)
            _projection_piece(S, t, k_lo, k_hi, item, first_item, final, xn_ptr, qkv_ptr, attn_ptr, x_ptr, h_ptr,
                              hn_ptr, act_ptr, out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr,
                              gate_ptr, up_ptr, down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, stream_k_ptr, sync_ptr,
                              B, C, FF, NQ, NKV, HAS_QKV_BIAS, HAS_O_BIAS, HAS_MLP_BIAS, BLOCK_B, BN_QKV, BK_QKV,
                              BN_O, BK_O, BN_GATE_UP, BK_GATE_UP, BN_DOWN, BK_DOWN, DOT_FP32, True, INTERPRETED)
            if COUNT_SPLITS and S == 6:
                if final:
                    _count_gate_up_tile(t, tl.cdiv(FF, BN_GATE_UP), per_split, sync_ptr, FF, BN_GATE_UP)
    else:
        tl.static_assert(S != 7, "the down projection without stream-K is `_down_tile`")
        _projection_piece(S, item, 0, K, item, item, True, xn_ptr, qkv_ptr, attn_ptr, x_ptr, h_ptr, hn_ptr, act_ptr,
                          out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr, gate_ptr, up_ptr,
                          down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, stream_k_ptr, sync_ptr, B, C, FF, NQ, NKV,
                          HAS_QKV_BIAS, HAS_O_BIAS, HAS_MLP_BIAS, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                          BK_GATE_UP, BN_DOWN, BK_DOWN, DOT_FP32, False, INTERPRETED)
        if COUNT_SPLITS and S == 6:
            _count_gate_up_tile(item, tl.cdiv(FF, BN_GATE_UP), per_split, sync_ptr, FF, BN_GATE_UP)


@triton.jit
def _down_tile(t, cols, per_split, act_ptr, h_ptr, out_ptr, partial_ptr, down_ptr, b_down_ptr, B, C, FF, eps,
               HAS_MLP_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr,
               DOWN_SPLITS: tl.constexpr, DOT_FP32: tl.constexpr):
    """Stage 7, tile t: out = h + act @ down.T, or split-K (t = ((row block, column tile), split)):
    fp32 partials [splits, B, C] of K range [split * per_split, ...), summed in stage 8."""
    if DOWN_SPLITS == 1:
        _fused_linear_tile(t % cols, (t // cols) * BLOCK_B, act_ptr, act_ptr, h_ptr, out_ptr,
                           down_ptr, down_ptr, down_ptr, b_down_ptr, b_down_ptr, b_down_ptr, B, FF, C, 0, 0,
                           eps, FF, C, C, 1, False, HAS_MLP_BIAS, True, False,
                           BLOCK_B, BN_DOWN, BK_DOWN, True, DOT_FP32, True, False)
    else:
        split = t % DOWN_SPLITS
        rows = (t // (DOWN_SPLITS * cols)) * BLOCK_B + tl.arange(0, BLOCK_B)
        n = ((t // DOWN_SPLITS) % cols) * BN_DOWN + tl.arange(0, BN_DOWN)
        k_lo = split * per_split
        acc, _ = _project_pipelined(act_ptr, FF, rows, B, k_lo, tl.minimum(k_lo + per_split, FF), FF,
                                    down_ptr, n, C, down_ptr, n, C, False, BLOCK_B, BN_DOWN, BK_DOWN, DOT_FP32)
        tl.store(partial_ptr + split * B * C + rows[:, None] * C + n[None, :], acc,
                 mask=(rows[:, None] < B) & (n[None, :] < C))


@triton.jit
def _rows_tile(row, bias, partial_ptr, h_ptr, out_ptr, out_normed_ptr, next_norm_ptr, B, C, eps,
               BLOCK_C: tl.constexpr, DOWN_SPLITS: tl.constexpr, NEXT_NORM: tl.constexpr):
    """Stage 8, one row: the split sum out = h + (sum of the partials + bias) in order (the same sum
    every step; F.linear's roundings), and with NEXT_NORM the next layer's xn = RMSNorm(out)."""
    dt = out_ptr.dtype.element_ty
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    if DOWN_SPLITS > 1:
        y = bias
        for split in range(DOWN_SPLITS):
            y += tl.load(partial_ptr + split * B * C + row * C + c, mask=cmask, other=0.0)
        r = tl.load(h_ptr + row * C + c, mask=cmask, other=0.0).to(tl.float32)
        out = (r + y.to(dt).to(tl.float32)).to(dt)
        tl.store(out_ptr + row * C + c, out, mask=cmask)
    else:
        out = tl.load(out_ptr + row * C + c, mask=cmask, other=0.0)
    if NEXT_NORM:                                # the next layer's xn, so that it skips stage 1
        normed = _rms_normalized(out.to(tl.float32), out_ptr, next_norm_ptr, c, cmask, C, eps)
        tl.store(out_normed_ptr + row * C + c, normed.to(dt), mask=cmask)


@triton.jit
def _count_gate_up_tile(t, cols, per_split, sync_ptr, FF, BN_GATE_UP: tl.constexpr):
    """Gate/up tile t is done: count it for every down split whose K range holds its columns."""
    first = (t % cols) * BN_GATE_UP
    for split in range(first // per_split, (tl.minimum(first + BN_GATE_UP, FF) - 1) // per_split + 1):
        _count_done(sync_ptr + SPLIT_DONE + split)


@triton.jit
def _gate_up_tiles_of_split(split, per_split, row_blocks, FF, BN_GATE_UP: tl.constexpr):
    """How many gate/up tiles the down projection's K split `split` reads."""
    k_lo = split * per_split
    k_hi = tl.minimum(k_lo + per_split, FF)
    return tl.maximum(tl.cdiv(k_hi, BN_GATE_UP) - k_lo // BN_GATE_UP, 0) * row_blocks


@triton.jit
def _decode_layer_kernel(x_ptr, xn_ptr, qkv_ptr, q_ptr, attn_ptr, h_ptr, hn_ptr, act_ptr, partial_ptr, out_ptr,
                         out_normed_ptr, attn_norm_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr,
                         mlp_norm_ptr, gate_ptr, up_ptr, down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, next_norm_ptr,
                         cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr, slot_ptr, start_ptr, end_ptr, sync_ptr,
                         stream_k_ptr, B, C, FF, NQ, NKV, H_Q, H_KV, eps, qk_scale_log2, stride_cos, stride_sin,
                         stride_cb, stride_ch, stride_cs, items,
                         STAGE: tl.constexpr, HALF: tl.constexpr, G: tl.constexpr, BLOCK_H: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
                         HAS_QKV_BIAS: tl.constexpr, HAS_O_BIAS: tl.constexpr, HAS_MLP_BIAS: tl.constexpr,
                         BLOCK_B: tl.constexpr, BN_QKV: tl.constexpr, BK_QKV: tl.constexpr, BN_O: tl.constexpr,
                         BK_O: tl.constexpr, BN_GATE_UP: tl.constexpr, BK_GATE_UP: tl.constexpr,
                         BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr, DOWN_SPLITS: tl.constexpr,
                         NORMED: tl.constexpr, NEXT_NORM: tl.constexpr, PREFETCH: tl.constexpr,
                         STREAM_K: tl.constexpr, INTERPRETED: tl.constexpr, DOT_FP32: tl.constexpr,
                         USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    row_blocks = tl.cdiv(B, BLOCK_B)
    cols_qkv = tl.cdiv(NQ, BN_QKV) + 2 * tl.cdiv(NKV, BN_QKV)
    cols_o = tl.cdiv(C, BN_O)
    cols_gate_up = tl.cdiv(FF, BN_GATE_UP)
    cols_down = tl.cdiv(C, BN_DOWN)
    DOWN_STREAM_K: tl.constexpr = STREAM_K & (1 << 7) != 0          # then DOWN_SPLITS is 1
    work_qkv = _projection_items(2, items, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                                 BK_GATE_UP, BN_DOWN, BK_DOWN, STREAM_K)
    work_o = _projection_items(4, items, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                               BK_GATE_UP, BN_DOWN, BK_DOWN, STREAM_K)
    work_gate_up = _projection_items(6, items, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                                     BK_GATE_UP, BN_DOWN, BK_DOWN, STREAM_K)
    work_down = row_blocks * cols_down * DOWN_SPLITS
    if DOWN_STREAM_K:
        work_down = _projection_items(7, items, B, C, FF, NQ, NKV, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP,
                                      BK_GATE_UP, BN_DOWN, BK_DOWN, STREAM_K)
    tiles = (B, work_qkv, B * H_KV, work_o, B, work_gate_up, work_down, B)    # each stage's (rows, or work items)
    per_split = tl.cdiv(tl.cdiv(FF, DOWN_SPLITS), BK_DOWN) * BK_DOWN
    if USE_PDL and STAGE != 0 and PREFETCH & (1 << STAGE) != 0:
        _prefetch_stage(pid, STAGE, wq_ptr, wk_ptr, wv_ptr, wo_ptr, gate_ptr, up_ptr, down_ptr, kc_ptr, vc_ptr,
                        start_ptr, end_ptr, C, FF, NQ, NKV, H_KV, stride_cb, stride_ch, stride_cs,
                        cols_qkv, cols_o, cols_gate_up, cols_down, per_split,
                        BN_QKV, BN_O, BN_GATE_UP, BN_DOWN, DOWN_SPLITS)
    wait_for_previous(USE_PDL)
    bias = tl.zeros([BLOCK_C], tl.float32)                 # stage 8's: the down bias, added to the split sum
    if HAS_MLP_BIAS and DOWN_SPLITS > 1 and (STAGE == 0 or STAGE == 8):
        bias = tl.load(b_down_ptr + tl.arange(0, BLOCK_C), mask=tl.arange(0, BLOCK_C) < C, other=0.0).to(tl.float32)
    # staged: one launch per stage, a program per tile (or stream-K work item)
    if STAGE == 1:
        for row in range(pid, B, num_programs):
            _norm_row(row, x_ptr, attn_norm_ptr, xn_ptr, C, eps, BLOCK_C)
    if STAGE == 2 or STAGE == 4 or STAGE == 6 or (STAGE == 7 and DOWN_STREAM_K):
        for item in range(pid, tiles[STAGE - 1], num_programs):
            _projection_item(STAGE, item, tiles[STAGE - 1], per_split, xn_ptr, qkv_ptr, attn_ptr, x_ptr, h_ptr,
                             hn_ptr, act_ptr, out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr, bo_ptr,
                             gate_ptr, up_ptr, down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr, stream_k_ptr, sync_ptr, B, C,
                             FF, NQ, NKV, HAS_QKV_BIAS, HAS_O_BIAS, HAS_MLP_BIAS, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O,
                             BN_GATE_UP, BK_GATE_UP, BN_DOWN, BK_DOWN, STREAM_K, False, DOT_FP32, INTERPRETED)
    if STAGE == 3:
        for t in range(pid, B * H_KV, num_programs):
            _attention_tile(t, qkv_ptr, q_ptr, attn_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr, slot_ptr, start_ptr,
                            end_ptr, NQ, NKV, H_Q, H_KV, qk_scale_log2, stride_cos, stride_sin, stride_cb, stride_ch,
                            stride_cs, HALF, G, BLOCK_H, BLOCK_G, BLOCK_S)
    if STAGE == 5:
        for row in range(pid, B, num_programs):
            _norm_row(row, h_ptr, mlp_norm_ptr, hn_ptr, C, eps, BLOCK_C)
    if STAGE == 7 and not DOWN_STREAM_K:
        for t in range(pid, tiles[6], num_programs):
            _down_tile(t, cols_down, per_split, act_ptr, h_ptr, out_ptr, partial_ptr, down_ptr, b_down_ptr, B, C, FF,
                       eps, HAS_MLP_BIAS, BLOCK_B, BN_DOWN, BK_DOWN, DOWN_SPLITS, DOT_FP32)
    if STAGE == 8:
        for row in range(pid, B, num_programs):
            _rows_tile(row, bias, partial_ptr, h_ptr, out_ptr, out_normed_ptr, next_norm_ptr, B, C, eps, BLOCK_C,
                       DOWN_SPLITS, NEXT_NORM)
    # persistent: every program takes the next tile of a stage from its queue, later stages once a
    # stage's queue is empty, and before running a tile waits only until what the tile reads is done
    if STAGE == 0:
        for S in tl.static_range(1, 9):
            if (S != 1 or not NORMED) and (S != 8 or DOWN_SPLITS > 1 or NEXT_NORM):
                t = _claim(sync_ptr, S)
                while t < tiles[S - 1]:
                    if USE_PDL and PREFETCH & (1 << S) != 0:
                        _prefetch_stage(t, S, wq_ptr, wk_ptr, wv_ptr, wo_ptr, gate_ptr, up_ptr, down_ptr, kc_ptr,
                                        vc_ptr, start_ptr, end_ptr, C, FF, NQ, NKV, H_KV, stride_cb, stride_ch,
                                        stride_cs, cols_qkv, cols_o, cols_gate_up, cols_down, per_split,
                                        BN_QKV, BN_O, BN_GATE_UP, BN_DOWN, DOWN_SPLITS)
                    if S == 7 and not DOWN_STREAM_K:     # a down tile waits only for its K split's gate/up
                        split = t % DOWN_SPLITS
                        _wait_until(sync_ptr, SPLIT_DONE + split,
                                    _gate_up_tiles_of_split(split, per_split, row_blocks, FF, BN_GATE_UP), INTERPRETED)
                    elif S > 2 or not NORMED:            # the rest: for all of the stage before
                        if S > 1:
                            _wait_until(sync_ptr, DONE + S - 1, tiles[S - 2], INTERPRETED)
                    if S == 1:
                        _norm_row(t, x_ptr, attn_norm_ptr, xn_ptr, C, eps, BLOCK_C)
                    if S == 2 or S == 4 or S == 6 or (S == 7 and DOWN_STREAM_K):
                        _projection_item(S, t, tiles[S - 1], per_split, xn_ptr, qkv_ptr, attn_ptr, x_ptr, h_ptr, hn_ptr,
                                         act_ptr, out_ptr, wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr, wo_ptr,
                                         bo_ptr, gate_ptr, up_ptr, down_ptr, b_gate_ptr, b_up_ptr, b_down_ptr,
                                         stream_k_ptr, sync_ptr, B, C, FF, NQ, NKV, HAS_QKV_BIAS, HAS_O_BIAS,
                                         HAS_MLP_BIAS, BLOCK_B, BN_QKV, BK_QKV, BN_O, BK_O, BN_GATE_UP, BK_GATE_UP,
                                         BN_DOWN, BK_DOWN, STREAM_K, True, DOT_FP32, INTERPRETED)
                    if S == 3:
                        _attention_tile(t, qkv_ptr, q_ptr, attn_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr,
                                        slot_ptr, start_ptr, end_ptr, NQ, NKV, H_Q, H_KV, qk_scale_log2, stride_cos,
                                        stride_sin, stride_cb, stride_ch, stride_cs, HALF, G, BLOCK_H, BLOCK_G, BLOCK_S)
                    if S == 5:
                        _norm_row(t, h_ptr, mlp_norm_ptr, hn_ptr, C, eps, BLOCK_C)
                    if S == 7 and not DOWN_STREAM_K:
                        _down_tile(t, cols_down, per_split, act_ptr, h_ptr, out_ptr, partial_ptr, down_ptr, b_down_ptr,
                                   B, C, FF, eps, HAS_MLP_BIAS, BLOCK_B, BN_DOWN, BK_DOWN, DOWN_SPLITS, DOT_FP32)
                    if S == 8:
                        _rows_tile(t, bias, partial_ptr, h_ptr, out_ptr, out_normed_ptr, next_norm_ptr, B, C, eps,
                                   BLOCK_C, DOWN_SPLITS, NEXT_NORM)
                    _count_done(sync_ptr + DONE + S)
                    t = _claim(sync_ptr, S)
        _exit(sync_ptr, num_programs)


@dataclass(frozen=True)
class LayerConfig:
    """(block_n, block_k) of each projection's tiles, the attention's key block, and the launch's
    warps and pipeline stages. The defaults are for 2-byte activations; `fit_shared_memory` shrinks
    the K blocks for fp32."""
    qkv: tuple[int, int] = (16, 128)
    o: tuple[int, int] = (16, 128)
    gate_up: tuple[int, int] = (64, 128)
    down: tuple[int, int] = (32, 256)
    attention_block: int = 128          # `fit_shared_memory` halves it to 64 at head_dim 128
    down_splits: int | None = None      # split-K of the down projection; None: `down_splits`
    block_rows: int = 64                # rows of a projection tile, at most (more rows: more row blocks)
    prefetch: tuple[int, ...] = ()      # stages whose tiles first L2-prefetch their inputs (`_prefetch_stage`)
    programs_per_sm: int = 1            # the persistent launch's programs; more than one are resident
                                        # only where shared memory holds them (fewer num_stages)
    stream_k: tuple[int, ...] = ()      # projection stages (2, 4, 6, 7) whose tile x K-block units work items share
    stream_k_items: int | None = None   # how many work items; None: one per SM (`_projection_item`)
    num_warps: int = 4
    num_stages: int = 4

    def __post_init__(self):
        if not set(self.prefetch) <= set(PREFETCH_STAGES):
            raise ValueError(f"LayerConfig: prefetch={self.prefetch}: stages {PREFETCH_STAGES} can prefetch")
        if self.programs_per_sm < 1:
            raise ValueError(f"LayerConfig: programs_per_sm={self.programs_per_sm} must be at least 1")
        if not set(self.stream_k) <= set(STREAM_K_STAGES):
            raise ValueError(f"LayerConfig: stream_k={self.stream_k}: stages {STREAM_K_STAGES} can share units")
        if set(self.stream_k) & set(self.prefetch):
            raise ValueError(f"LayerConfig: stages {sorted(set(self.stream_k) & set(self.prefetch))} in both stream_k "
                             f"and prefetch (a work item's prefetch is not written)")
        if 7 in self.stream_k and (self.down_splits or 1) > 1:
            raise ValueError(f"LayerConfig: down_splits={self.down_splits} with stage 7 in stream_k, which splits "
                             f"the down projection's K itself")
        if self.stream_k_items is not None and not 1 <= self.stream_k_items <= STREAM_K_MAX_ITEMS:
            raise ValueError(f"LayerConfig: stream_k_items={self.stream_k_items} must be 1 to {STREAM_K_MAX_ITEMS}")


def layer_config_from_env() -> LayerConfig:
    """LayerConfig() with the fields DEEPRETRIEVAL_LAYER_CONFIG sets, KEY=VALUE items separated by
    spaces, VALUE integers separated by commas: e.g. "prefetch=2,3,4,6,7 block_rows=128
    gate_up=64,128", or "down_splits=" for None. To tune the layer kernel on a GPU without
    editing code (bench.fast_generate records it); an unknown key or a malformed value is an error."""
    return _parse_layer_config(os.environ.get("DEEPRETRIEVAL_LAYER_CONFIG", ""))


@functools.lru_cache(maxsize=8)
def _parse_layer_config(text: str) -> LayerConfig:
    kinds = {f.name: f.type for f in fields(LayerConfig)}       # annotations as strings: "int | None", ...
    changes = {}
    for item in text.split():
        key, _, value = item.partition("=")
        kind = kinds.get(key)
        try:
            numbers = tuple(int(v) for v in value.split(",")) if value else ()
        except ValueError:
            numbers = None
        counts = {"tuple[int, int]": (2,), "int": (1,), "int | None": (0, 1)}.get(kind, ())
        if kind is None or "=" not in item or numbers is None or (counts and len(numbers) not in counts):
            raise ValueError(f"DEEPRETRIEVAL_LAYER_CONFIG: {item!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(kinds)} and VALUE {kind or 'integers separated by commas'}")
        changes[key] = numbers if kind.startswith("tuple") else (numbers[0] if numbers else None)
    return replace(LayerConfig(), **changes)


SHARED_MEMORY_BUDGET = 200 * 1024       # bytes of pipeline buffers a stage may take (an H100 has 227 KiB)


def pipeline_bytes(config: LayerConfig, block_b: int, head_dim: int, element_size: int) -> dict[str, int]:
    """Shared memory each stage's pipelined loop holds: num_stages chunks of x (block_b rows) and of
    its weights (two for gate/up), or of K and V for the attention."""
    chunk = {name: (block_b + weights * bn) * bk for name, (bn, bk), weights in (
        ("qkv", config.qkv, 1), ("o", config.o, 1), ("gate_up", config.gate_up, 2), ("down", config.down, 1))}
    chunk["attention"] = 2 * config.attention_block * head_dim
    return {name: config.num_stages * n * element_size for name, n in chunk.items()}


def fit_shared_memory(config: LayerConfig, block_b: int, head_dim: int, element_size: int,
                      budget: int = SHARED_MEMORY_BUDGET) -> LayerConfig:
    """`config` with the K block of every stage over `budget` halved until it fits (fp32 needs half
    the bf16 blocks; a launch over the hardware's limit fails with OutOfResources)."""
    while True:
        over = [name for name, n in pipeline_bytes(config, block_b, head_dim, element_size).items() if n > budget]
        if not over:
            return config
        changes = {}
        for name in over:
            if name == "attention":
                if config.attention_block <= 16:
                    raise ValueError(f"decode_layer: head_dim {head_dim} does not fit {budget} bytes of shared memory")
                changes["attention_block"] = config.attention_block // 2
            else:
                bn, bk = getattr(config, name)
                if bk <= 16:
                    raise ValueError(f"decode_layer: the {name} tiles do not fit {budget} bytes of shared memory")
                changes[name] = (bn, bk // 2)
        config = replace(config, **changes)


def down_splits(tiles: int, device: torch.device) -> int:
    """Split-K of the down projection: as many splits as one wave of programs holds, one per SM
    (at most 8). Its K is the MLP width (4.9k at Qwen2.5-0.5B), its N only the model width, so
    unsplit it has few tiles. Measured on an H100, 64 rows: 32x256 tiles in 4 splits at Qwen2.5-0.5B
    (28 tiles) took 6.8 us against 9.9 for 16x256 in 3 with the old rule; in 2 splits at 3B (64
    tiles) 20.7 against 24.2 (docs/LOG.md)."""
    return max(1, min(8, (parallel_programs(device) // 2) // tiles))


def decode_layer_triton(x, w, eps, cos, sin, positions, k_cache, v_cache, slot, kv_start, kv_end, *,
                        sync: torch.Tensor | None = None, persistent: bool = False,
                        config: LayerConfig | None = None, normed: torch.Tensor | None = None,
                        next_norm: torch.Tensor | None = None):
    B, C = x.shape
    _, H_kv, _, D = k_cache.shape
    NQ, NKV, FF = w.wq.shape[0], w.wk.shape[0], w.gate.shape[0]
    H_q = NQ // D
    if (NQ % D or NKV != H_kv * D or w.wv.shape != w.wk.shape or H_q % H_kv or w.wo.shape != (C, NQ)
            or any(t.shape != (C,) for t in (w.attn_norm, w.mlp_norm)) or w.up.shape != w.gate.shape
            or w.down.shape != (C, FF) or any(t.shape[1] != C for t in (w.wq, w.wk, w.gate))):
        raise ValueError(f"decode_layer: weights {[tuple(t.shape) for t in w[:9]]} "
                         f"do not fit x {tuple(x.shape)} and caches {tuple(k_cache.shape)}")
    check_cache_args("decode_layer", B, H_kv, D, x.dtype, cos, sin, positions, k_cache, v_cache, slot)
    if D < 16 or D & (D - 1):
        raise ValueError(f"decode_layer: head_dim {D} must be a power of two >= 16")
    if x.stride(1) != 1 or x.stride(0) != C or any(not t.is_contiguous() for t in w.tensors()):
        raise ValueError("decode_layer: x and the weights must be contiguous")
    if normed is not None and (normed.shape != x.shape or normed.dtype != x.dtype or not normed.is_contiguous()):
        raise ValueError(f"decode_layer: normed {tuple(normed.shape)} {normed.dtype} must be like x {tuple(x.shape)} "
                         f"{x.dtype} (contiguous)")
    if next_norm is not None and (next_norm.shape != (C,) or not next_norm.is_contiguous()):
        raise ValueError(f"decode_layer: next_norm has shape {tuple(next_norm.shape)}, expected ({C},)")
    if any(group is not None and any(b is None for b in group) for group in (w.qkv_bias, w.mlp_bias)):
        raise ValueError("decode_layer: give biases for all of q, k, v (and of gate, up, down) or for none")
    bq, bk, bv = w.qkv_bias or (w.wq,) * 3                             # unused slots: any valid pointer
    b_gate, b_up, b_down = w.mlp_bias or (w.wq,) * 3
    config = config or layer_config_from_env()
    block_b = min(config.block_rows, max(16, triton.next_power_of_2(B)))
    config = fit_shared_memory(config, block_b, D, x.element_size())
    if sync is None:
        sync = torch.zeros(LAYER_SYNC_WORDS, dtype=torch.int32, device=x.device)
    if sync.dtype != torch.int32 or sync.numel() != LAYER_SYNC_WORDS or sync.device != x.device:
        raise ValueError(f"decode_layer: sync must be {LAYER_SYNC_WORDS} int32 zeros on {x.device}, got "
                         f"{sync.numel()} {sync.dtype} on {sync.device}")
    new = lambda *shape: torch.empty(shape, dtype=x.dtype, device=x.device)    # noqa: E731
    xn, qkv, q, attn, h, hn, act, out = (new(B, C) if normed is None else normed, new(B, NQ + 2 * NKV),
                                         new(B, H_q, D), new(B, NQ), new(B, C), new(B, C), new(B, FF), new(B, C))
    out_normed = out if next_norm is None else new(B, C)
    G = H_q // H_kv
    rows = triton.cdiv(B, block_b)
    splits = 1 if 7 in config.stream_k else config.down_splits or down_splits(rows * triton.cdiv(C, config.down[0]),
                                                                             x.device)
    partial = torch.empty((splits, B, C), dtype=torch.float32, device=x.device) if splits > 1 else out
    # the projections: (tiles, K, (block_n, block_k)); with stream-K their work items share the units
    projections = {2: (rows * (triton.cdiv(NQ, config.qkv[0]) + 2 * triton.cdiv(NKV, config.qkv[0])), C, config.qkv),
                   4: (rows * triton.cdiv(C, config.o[0]), NQ, config.o),
                   6: (rows * triton.cdiv(FF, config.gate_up[0]), C, config.gate_up),
                   7: (rows * triton.cdiv(C, config.down[0]) * splits, FF, config.down)}
    items = config.stream_k_items or parallel_programs(x.device) // 2
    if x.is_cuda and config.stream_k and items > parallel_programs(x.device) // 2:
        raise ValueError(f"decode_layer: stream_k_items={items} is more than the SMs: the items wait for each "
                         f"other, so all must be resident")
    work = {S: min(items, tiles * triton.cdiv(K, bk)) if S in config.stream_k else tiles
            for S, (tiles, K, (_, bk)) in projections.items()}
    stream_k = (torch.empty(items * 2 * block_b * max(projections[S][2][0] for S in config.stream_k),
                            dtype=torch.float32, device=x.device) if config.stream_k else sync)
    args = (x, xn, qkv, q, attn, h, hn, act, partial, out, out_normed, w.attn_norm, w.wq, w.wk, w.wv, bq, bk, bv,
            w.wo, w.wq if w.o_bias is None else w.o_bias, w.mlp_norm, w.gate, w.up, w.down, b_gate, b_up, b_down,
            w.mlp_norm if next_norm is None else next_norm, cos, sin, positions, k_cache, v_cache, slot, kv_start,
            kv_end, sync, stream_k,
            B, C, FF, NQ, NKV, H_q, H_kv, eps, D ** -0.5 * math.log2(math.e), cos.stride(0), sin.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), items)
    meta = dict(HALF=D // 2, G=G, BLOCK_H=triton.next_power_of_2(G), BLOCK_G=max(16, triton.next_power_of_2(G)),
                BLOCK_S=config.attention_block, BLOCK_C=triton.next_power_of_2(C), HAS_QKV_BIAS=w.qkv_bias is not None,
                HAS_O_BIAS=w.o_bias is not None, HAS_MLP_BIAS=w.mlp_bias is not None, BLOCK_B=block_b,
                BN_QKV=config.qkv[0], BK_QKV=config.qkv[1], BN_O=config.o[0], BK_O=config.o[1],
                BN_GATE_UP=config.gate_up[0], BK_GATE_UP=config.gate_up[1], BN_DOWN=config.down[0],
                BK_DOWN=config.down[1], DOWN_SPLITS=splits,
                NORMED=normed is not None, NEXT_NORM=next_norm is not None,
                PREFETCH=sum(1 << stage for stage in set(config.prefetch)),
                STREAM_K=sum(1 << stage for stage in set(config.stream_k)),
                INTERPRETED=os.environ.get("TRITON_INTERPRET") == "1",
                DOT_FP32=os.environ.get("TRITON_INTERPRET") == "1" or x.dtype == torch.float32,
                num_warps=config.num_warps, num_stages=config.num_stages, **pdl_options(x.device))
    if persistent:
        # programs_per_sm a SM (2 x that under the interpreter); the queues need none of them resident together
        programs = parallel_programs(x.device) // 2 * config.programs_per_sm
        _decode_layer_kernel[(programs,)](*args, STAGE=ALL_STAGES, **meta)
    else:
        tiles = {1: B if normed is None else 0, 2: work[2], 3: B * H_kv, 4: work[4], 5: B, 6: work[6], 7: work[7],
                 8: B if splits > 1 or next_norm is not None else 0}
        for stage in STAGES:
            if tiles[stage]:
                _decode_layer_kernel[(tiles[stage],)](*args, STAGE=stage, **meta)
    if meta["INTERPRETED"] and sync[WAIT_FAILED.value].item():
        sync.zero_()
        raise RuntimeError("decode_layer: a tile waited for tiles (or a stream-K item for partials) never run")
    return out if next_norm is None else (out, out_normed)

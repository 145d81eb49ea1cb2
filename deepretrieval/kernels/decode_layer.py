"""One decoder layer for one decode token per row: attention block and MLP block with their norms.

    x_next = decode_layer(x, weights, eps, cos, sin, positions, k_cache, v_cache, slot, kv_start, kv_end)
    x_last = decode_layers(x, [weights, ...], eps, cos, sin, positions, k_caches, v_caches, slot, kv_start, kv_end)

    x          [B, C]           the residual stream entering the layer (model dtype)
    weights    LayerWeights     the layer's norms, projections and biases
    eps        RMSNorm epsilon
    cos, sin, positions, k_cache, v_cache, slot   as `deepretrieval.kernels.rope_cache`
    kv_start, kv_end                              as `deepretrieval.kernels.decode_attention`
    returns    [B, C]           h + down(silu(gate(n)) * up(n)), n = RMSNorm(h),
                                h = x + wo(attention(RoPE(q/k/v(RMSNorm(x)))))
    This step's k and v land in the caches at `slot`, as rope_cache does.

It is the composition of five kernels (`compose`): qkv_rope_cache, decode_attention, and
fused_linear for the o, gate/up and down projections, the reference being exactly that over their
references, with their numerics. At a few rows (<= fused_linear.MAX_ROWS) those kernels are what
runs. More rows on CUDA run kernels/decode_layer_triton.py (`layer_kernel_mode`): by default up to
LAYER_KERNEL_MAX_ROWS (64, one row block of its tiles), as seven or eight "staged" launches; above
that the caller runs cuBLAS matmuls (model/fast_decode.py does), whose larger tiles read each
weight fewer times (batch 256 at Qwen2.5-0.5B shapes on an H100: 103k tok/s against the layer
kernel's 90k; batch 64: 48.5k against 46.7k, with 25-50 % less memory; docs/LOG.md).
DEEPRETRIEVAL_LAYER_KERNEL overrides: "staged" or "persistent" (one launch, its programs taking
tiles from a queue per stage) for every row count above MAX_ROWS, "off" for none. DEEPRETRIEVAL_LAYER_CONFIG sets
the layer kernel's tiles (decode_layer_triton.layer_config_from_env).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch

from deepretrieval.kernels import use_triton
from deepretrieval.kernels.decode_attention import decode_attention, decode_attention_reference
from deepretrieval.kernels.fused_linear import MAX_ROWS, fused_linear, fused_linear_reference
from deepretrieval.kernels.qkv_rope_cache import qkv_rope_cache, qkv_rope_cache_reference


class LayerWeights(NamedTuple):
    """A decoder layer's weights as the decode kernels take them (nn.Linear layout)."""
    attn_norm: torch.Tensor                  # [C]
    wq: torch.Tensor                         # [H D, C]
    wk: torch.Tensor                         # [H_kv D, C]
    wv: torch.Tensor                         # [H_kv D, C]
    wo: torch.Tensor                         # [C, H D]
    mlp_norm: torch.Tensor                   # [C]
    gate: torch.Tensor                       # [F, C]
    up: torch.Tensor                         # [F, C]
    down: torch.Tensor                       # [C, F]
    qkv_bias: tuple | None = None            # (bq, bk, bv)
    o_bias: torch.Tensor | None = None       # [C]
    mlp_bias: tuple | None = None            # (b_gate, b_up, b_down)

    @classmethod
    def of(cls, layer) -> "LayerWeights":
        """From a model/transformer.py Block (detached: views of its parameters)."""
        attn, mlp = layer.attn, layer.mlp

        def biases(*linears):
            found = [lin.bias for lin in linears]
            return None if all(b is None for b in found) else tuple(
                None if b is None else b.detach() for b in found)
        return cls(layer.attn_norm.weight.detach(), attn.wq.weight.detach(), attn.wk.weight.detach(),
                   attn.wv.weight.detach(), attn.wo.weight.detach(), layer.mlp_norm.weight.detach(),
                   mlp.gate.weight.detach(), mlp.up.weight.detach(), mlp.down.weight.detach(),
                   biases(attn.wq, attn.wk, attn.wv), None if attn.wo.bias is None else attn.wo.bias.detach(),
                   biases(mlp.gate, mlp.up, mlp.down))

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self[:9], *(self.qkv_bias or ()), self.o_bias, *(self.mlp_bias or ())) if t is not None]


def compose(ops, x, w: LayerWeights, eps, cos, sin, positions, k_cache, v_cache, slot, kv_start, kv_end):
    """The layer from ops = (qkv_rope_cache, decode_attention, fused_linear) (kernels or references)."""
    qkv_rope_cache_op, decode_attention_op, fused_linear_op = ops
    b_gate, b_up, b_down = w.mlp_bias or (None,) * 3
    q = qkv_rope_cache_op(x, (w.wq, w.wk, w.wv), w.qkv_bias, w.attn_norm, eps, cos, sin, positions,
                          k_cache, v_cache, slot)                                       # [B, H, D]
    attn = decode_attention_op(q, k_cache, v_cache, kv_start, kv_end).flatten(1)        # [B, H D]
    h = fused_linear_op(attn, (w.wo,), (w.o_bias,), residual=x)                         # [B, C]
    act = fused_linear_op(h, (w.gate, w.up), (b_gate, b_up), norm_weight=w.mlp_norm, eps=eps,
                          silu_mul=True)                                                # [B, F]
    return fused_linear_op(act, (w.down,), (b_down,), residual=h)                       # [B, C]


REFERENCE_OPS = (qkv_rope_cache_reference, decode_attention_reference, fused_linear_reference)
KERNEL_OPS = (qkv_rope_cache, decode_attention, fused_linear)


def decode_layer_reference(x, w: LayerWeights, eps, cos, sin, positions, k_cache, v_cache, slot,
                           kv_start, kv_end) -> torch.Tensor:
    return compose(REFERENCE_OPS, x, w, eps, cos, sin, positions, k_cache, v_cache, slot, kv_start, kv_end)


LAYER_KERNEL_MAX_ROWS = 64
LAYER_SYNC_WORDS = 32 + 256         # the layer kernel's tile queues and counters, then stream-K's flags (int32)
LAYER_KERNEL_MODES = ("auto", "staged", "persistent", "off")


def layer_kernel_mode(rows: int) -> str | None:
    """How `rows` decode rows run on CUDA: "staged" or "persistent" (the layer kernel), or None
    (the per-op kernels up to MAX_ROWS, the caller's cuBLAS path above). DEEPRETRIEVAL_LAYER_KERNEL:
    unset, empty or "auto": "staged" for MAX_ROWS < rows <= LAYER_KERNEL_MAX_ROWS; "staged" or
    "persistent": that mode above MAX_ROWS; "off": never."""
    mode = os.environ.get("DEEPRETRIEVAL_LAYER_KERNEL") or "auto"
    if mode not in LAYER_KERNEL_MODES:
        raise ValueError(f"DEEPRETRIEVAL_LAYER_KERNEL={mode!r}: use one of {', '.join(LAYER_KERNEL_MODES)}")
    if rows <= MAX_ROWS or mode == "off" or (mode == "auto" and rows > LAYER_KERNEL_MAX_ROWS):
        return None
    return "staged" if mode == "auto" else mode


def decode_layers(x, weights: Sequence[LayerWeights], eps, cos, sin, positions, k_caches, v_caches, slot,
                  kv_start, kv_end, sync: torch.Tensor | None = None) -> torch.Tensor:
    """Layer after layer: x through weights[i] with caches k_caches[i], v_caches[i] (no grad; one
    eps for all). The Triton layer kernel on CUDA where `layer_kernel_mode(rows)` takes it, each
    layer's last stage also writing the next layer's input norm, so that the next skips its norm
    stage (`sync`, LAYER_SYNC_WORDS int32 zeros, is the persistent kernel's queue state: pass one
    per decoder so that the launch allocates nothing); the five dispatched kernels a layer otherwise; same results."""
    mode = layer_kernel_mode(x.shape[0])
    if mode and use_triton(x, *weights[0].tensors(), cos, sin, positions, k_caches[0], v_caches[0], slot):
        from deepretrieval.kernels.decode_layer_triton import decode_layer_triton
        normed = None
        for i, w in enumerate(weights):
            next_norm = weights[i + 1].attn_norm if i + 1 < len(weights) else None
            out = decode_layer_triton(x, w, eps, cos, sin, positions, k_caches[i], v_caches[i], slot, kv_start,
                                      kv_end, sync=sync, persistent=mode == "persistent", normed=normed,
                                      next_norm=next_norm)
            x, normed = out if next_norm is not None else (out, None)
        return x
    for i, w in enumerate(weights):
        x = compose(KERNEL_OPS, x, w, eps, cos, sin, positions, k_caches[i], v_caches[i], slot, kv_start, kv_end)
    return x


def decode_layer(x, w: LayerWeights, eps, cos, sin, positions, k_cache, v_cache, slot, kv_start, kv_end,
                 sync: torch.Tensor | None = None) -> torch.Tensor:
    """One layer: `decode_layers` over [w]."""
    return decode_layers(x, [w], eps, cos, sin, positions, [k_cache], [v_cache], slot, kv_start, kv_end, sync)

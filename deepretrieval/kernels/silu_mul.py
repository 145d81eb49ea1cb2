"""SwiGLU's gating: silu(gate) * up, as Qwen2MLP / LlamaMLP compute `act_fn(gate_proj(x)) * up_proj(x)`.

    h = silu_mul(gate, up)                      # gate, up [..., F] -> [..., F]
    gate, up = gate_up.chunk(2, dim=-1)         # e.g. views of one projection laid side by side

silu is taken in fp32 and rounded to the inputs' dtype, then multiplied by up and rounded again,
as torch does for the two ops; the Triton kernel (kernels/silu_mul_triton.py) rounds at the same
points, in one launch instead of two and without the [..., F] intermediate in memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from deepretrieval.kernels import use_triton


def silu_mul_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The model's gating too (model/transformer.py's MLP); differentiable."""
    return F.silu(gate) * up


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Triton on CUDA (no grad), the reference elsewhere; same arguments and results."""
    if use_triton(gate, up):
        from deepretrieval.kernels.silu_mul_triton import silu_mul_triton
        return silu_mul_triton(gate, up)
    return silu_mul_reference(gate, up)

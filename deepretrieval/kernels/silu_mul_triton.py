"""Triton silu(gate) * up: one program per row and block of columns.

Same signature and results as `deepretrieval.kernels.silu_mul.silu_mul_reference` (see that module
for the rounding); gate and up may be strided views (one row stride each, unit stride along F),
such as the two halves of a gate/up projection. The output is a new contiguous tensor.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepretrieval.kernels import as_rows
from deepretrieval.kernels.pdl_triton import pdl_options, wait_for_previous

BLOCK_F = 1024


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, stride_gate, stride_up, stride_out, F,
                     BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    g = tl.load(gate_ptr + row * stride_gate + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + row * stride_up + cols, mask=mask, other=0.0)
    act = (g / (1.0 + tl.exp(-g))).to(up.dtype)          # torch's silu, rounded to the dtype
    tl.store(out_ptr + row * stride_out + cols, (act.to(tl.float32) * up.to(tl.float32)).to(up.dtype), mask=mask)


def silu_mul_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"silu_mul: gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} "
                         f"{up.dtype} must match")
    g2, u2 = as_rows(gate), as_rows(up)                                    # [M, F]
    F = gate.shape[-1]
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    out2 = out.view(-1, F)
    block = min(BLOCK_F, triton.next_power_of_2(F))
    _silu_mul_kernel[(g2.shape[0], triton.cdiv(F, block))](
        g2, u2, out2, g2.stride(0), u2.stride(0), out2.stride(0), F,
        BLOCK=block, num_warps=4, **pdl_options(gate.device))
    return out

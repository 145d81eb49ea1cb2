"""Programmatic dependent launch (PDL, Hopper and later) for the decode-step kernels.

A decode step is hundreds of short kernels. Normally each starts only when the one before it has
finished, and its programs are then scheduled onto an idle GPU: a few µs per kernel in which no
weight byte moves. A kernel launched with PDL may start while the kernel before it is still
running, as soon as every program of that kernel has passed its own `wait_for_previous`. Its
programs do what needs nothing from earlier kernels (the decode GEMV loads its first weight chunk)
and then wait in `wait_for_previous` until the kernel before has finished and its writes are visible.

The rule that keeps this correct: before `wait_for_previous` a kernel reads only tensors that no
kernel of the step writes (weights, norm weights, biases), or that only kernels two or more launches
back write (a kernel lets the next one start only after its own wait, so the kernel before it has
finished by then), and writes nothing. Every PDL kernel waits before it ends, so "the previous
kernel has finished" implies every earlier one has too, and a kernel that follows a normal
(non-PDL) kernel simply starts after it, as without PDL.
Launchers pass `**pdl_options(device)` (from `kernels.use_pdl`); off Hopper, under the CPU
interpreter or with DEEPRETRIEVAL_PDL=0 it is off and the kernels are as before.

Measured on an H100 (`python -m bench.fast_generate --cases latency [--no-pdl]`): batch-1 decode
+17 % at Qwen2.5-0.5B shapes and +7 % at 3B. Two variants were no faster and were dropped: letting
dependents start before the wait (so whole chains of kernels become resident early), and a TMA
bulk prefetch of each program's weight rows into L2 before the wait. At 64 rows, the layer kernel
prefetching a whole layer's weights into L2 from its first launch halved the rollout; each program
asking L2 for its own tile's bytes (`prefetch_l2`, opt-in there) gained 2 % at Qwen2.5-0.5B and lost
10 % at 3B (docs/LOG.md).
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from deepretrieval.kernels import use_pdl


@triton.jit
def wait_for_previous(USE_PDL: tl.constexpr):
    """Block until the kernels launched before this one have finished (their writes visible),
    then let the next PDL kernel start its programs."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def prefetch_l2(ptr, rows, row_bytes, row_stride_bytes, THREADS: tl.constexpr):
    """Ask L2 for `rows` runs of `row_bytes` bytes from `ptr`, `row_stride_bytes` apart: one
    `prefetch.global.L2` per 128-byte line, THREADS lines at a time. A hint: it loads nothing into
    registers, cannot fault, and changes no result, so a kernel may issue it before its wait."""
    base = ptr.to(tl.pointer_type(tl.int8))
    per_row = tl.cdiv(row_bytes, 128)
    lines = rows * per_row
    for first in range(0, lines, THREADS):
        line = tl.minimum(first + tl.arange(0, THREADS), lines - 1)
        address = base + (line // per_row).to(tl.int64) * row_stride_bytes + (line % per_row) * 128
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [address], dtype=tl.int32,
                                  is_pure=False, pack=1)


def pdl_options(device) -> dict:
    """The keywords of a Triton kernel call that turn PDL on or off for `device`: the kernel's
    USE_PDL constexpr and, when on, the `launch_pdl` launch option."""
    return {"USE_PDL": True, "launch_pdl": True} if use_pdl(device) else {"USE_PDL": False}

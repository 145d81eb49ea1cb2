"""Decode and LM-head kernels: Triton on CUDA, plain PyTorch everywhere else.

Every kernel comes as three functions with one signature:

    kernels/<name>.py          <name>_reference   plain PyTorch; any device; differentiable
                               <name>             dispatcher: Triton when `use_triton(...)`, else the reference
    kernels/<name>_triton.py   <name>_triton      the Triton kernel(s) and their launcher

    rmsnorm           RMSNorm in fp32, optionally fused with the residual add (the reference is
                      also the model's RMSNorm, model/transformer.py)
    rope              rotary embedding of q and k in one launch (HF rotate_half convention; its
                      `apply_rope` is also the model's rotation)
    rope_cache        rope of one decode token's q and k, k and v written into the KV cache
    qkv_rope_cache    fused_linear's q/k/v projection and rope_cache in one kernel (one decode row)
    decode_attention  one new token against the static KV cache, GQA, split-K (flash-decoding)
    fused_linear      decode GEMV (<= 16 rows): RMSNorm before, bias / SiLU-gate / residual after,
                      q, k, v (or gate, up) in one launch
    decode_layer      a whole decoder layer for one token per row: the per-op kernels above composed,
                      and (17-64 rows by default) one kernel whose stages run staged or persistent;
                      decode_layers runs a stack, each layer handing the next its input norm
    silu_mul          SwiGLU's silu(gate) * up in one launch (decode above fused_linear's rows)
    sample            greedy / temperature / top-k / top-p sampling with no host sync
    head_sample       final RMSNorm, LM head and sampler; above 16 rows one pass that never writes
                      the logits
    record_step       the end of a decode step: record the samples, mark stopped rows, bump counters
    logit_stats       log-sum-exp, target logit and entropy sum of LM-head logits, and their
                      gradient, in one pass each (the RL loss's response head, rl/response_head.py)

The Triton half lives in its own module for two reasons: triton is optional (a CPU install
runs the references and never imports it), and `@triton.jit` decides at decoration time whether
a kernel runs compiled or in the CPU interpreter (`TRITON_INTERPRET=1`), so only code that means
to run Triton may import those modules, after choosing the mode. The kernel tests set the variable
when there is no GPU and then import `kernels.<name>_triton`:

    python -m pytest -q tests/test_kernels_*.py                # CPU: Triton interpreter vs references
    python -m pytest -q -m gpu tests/test_kernels_*.py         # CUDA: real shapes, bf16 and fp32
    python -m bench.kernels                                    # CUDA: speed vs references and HBM

On Hopper and later the decode-step kernels are launched with programmatic dependent launch, so
each one starts while the one before it finishes (kernels/pdl_triton.py; DEEPRETRIEVAL_PDL=0 turns
it off). All launchers are free of host synchronisation and take only device tensors for anything that
changes between decode steps, so a decode step that calls them can be captured in a CUDA graph
(run each kernel once before capture so that Triton compiles outside it).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the Triton kernel should run on these inputs: all on CUDA, triton installed, and
    no gradient wanted (the kernels have no backward; training goes through the references)."""
    if not all(t.is_cuda for t in tensors) or not triton_available():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


@functools.cache
def _device_properties(device_index: int):
    return torch.cuda.get_device_properties(device_index)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def use_pdl(device: torch.device) -> bool:
    """Launch the decode-step kernels with programmatic dependent launch (kernels/pdl_triton.py):
    on CUDA devices of compute capability 9.0 (Hopper) or later, unless DEEPRETRIEVAL_PDL=0."""
    if device.type != "cuda" or os.environ.get("DEEPRETRIEVAL_PDL", "1") == "0":
        return False
    return _device_properties(_index(device)).major >= 9


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """[..., N] -> [M, N] with unit stride along N, for a kernel that walks rows (a view when possible)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def parallel_programs(device: torch.device) -> int:
    """How many programs fill the device: two per SM on CUDA; 4 under the CPU interpreter (enough
    to exercise the split-and-reduce paths while keeping interpreted grids small)."""
    if device.type != "cuda":
        return 4
    return 2 * _device_properties(_index(device)).multi_processor_count

"""Compile Triton kernels' launches for an H100 (sm_90) without a GPU, specialised as Triton's JIT
would (16-byte divisibility of aligned pointers and of ints), so that a kernel that does not compile
for the GPU fails on CPU CI too: every stage of the decode layer kernel, decode attention with its
reduce, the sampler, the fused LM head + sampler, fused_linear. Numerics are the interpreter and
GPU tests' job.

    PYTHONPATH=. python tests/hopper_compile.py    # from the repository root (it imports bench/): prints
                                                   # each launch's grid, prefetches, cp.async and wgmma
                                                   # instructions, and shared memory; raises on error

It needs the Triton kernels compiled, not interpreted: run it in a process without TRITON_INTERPRET
(test_kernels_decode_layer.py starts one)."""
from __future__ import annotations

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import deepretrieval.kernels.decode_attention_triton as attention_triton
import deepretrieval.kernels.decode_layer_triton as layer_triton
import deepretrieval.kernels.fused_linear_triton as fused_linear_triton
import deepretrieval.kernels.head_sample_triton as head_sample_triton
import deepretrieval.kernels.rmsnorm_triton as rmsnorm_triton
import deepretrieval.kernels.sampling_triton as sampling_triton
from bench.launch_capture import captured_launches
from deepretrieval.kernels.decode_layer import LayerWeights

HOPPER = GPUTarget("cuda", 90, 32)
POINTER = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.int32: "*i32",
           torch.int64: "*i64"}


def compiled(where, call) -> list[str]:
    """call() with the kernels at `where` captured; each launch compiled: a line per launch, named
    by its kernel or, for the layer kernel, by its stage, with its L2 prefetches before the PDL wait."""
    with captured_launches(*where) as launches:
        call()
    lines = []
    for kernel, grid, args, kw in launches:
        binary = compile_for_hopper(kernel, args, kw)
        ptx = binary.asm["ptx"]
        before_wait = ptx.split("griddepcontrol.wait")[0].count("prefetch.global.L2")
        lines.append(f"{'stage %d' % kw['STAGE'] if 'STAGE' in kw else kernel.__name__}: {grid} programs, "
                     f"{before_wait} of {ptx.count('prefetch.global.L2')} prefetches before the wait, "
                     f"{ptx.count('cp.async.cg') + ptx.count('cp.async.ca')} cp.async, "
                     f"{ptx.count('wgmma.mma_async')} wgmma, {binary.metadata.shared} B shared")
    return lines


def compile_for_hopper(kernel, args, kw):
    """triton.compile of one captured launch (with PDL on, as on an H100)."""
    constexpr_names = {p.name for p in kernel.params if p.is_constexpr}
    values = iter(args)
    signature, constants, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexpr_names:
            signature[name], constants[name] = "constexpr", kw[name]
            continue
        v = next(values)
        if isinstance(v, torch.Tensor):
            signature[name], aligned = POINTER[v.dtype], v.data_ptr() % 16 == 0
        else:
            signature[name], aligned = ("fp32", False) if isinstance(v, float) else ("i32", v % 16 == 0)
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    options = {k: kw[k] for k in ("num_warps", "num_stages") if k in kw}
    if "USE_PDL" in constants:
        constants["USE_PDL"] = True
        options["launch_pdl"] = True
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=HOPPER, options=options)


def layer_stages(C, F, H, H_kv, D, B, dtype, chained=False, persistent=False, **config) -> list[str]:
    """Compiles every stage one decode_layer_triton call launches; a line per stage (stage 0: the
    persistent launch). `chained`: a layer inside a stack (its input norm given, the next layer's
    written by its last stage)."""
    def t(*shape):
        return torch.zeros(*shape, dtype=dtype)
    w = LayerWeights(t(C), t(H * D, C), t(H_kv * D, C), t(H_kv * D, C), t(C, H * D), t(C), t(F, C), t(F, C), t(C, F),
                     (t(H * D), t(H_kv * D), t(H_kv * D)))
    S = 768
    return compiled([(layer_triton, "_decode_layer_kernel")], lambda: layer_triton.decode_layer_triton(
        t(B, C), w, 1e-6, torch.zeros(S, D), torch.zeros(S, D), torch.zeros(B, dtype=torch.long), t(B, H_kv, S, D),
        t(B, H_kv, S, D), torch.zeros(1, dtype=torch.long), torch.zeros(B, dtype=torch.int32),
        torch.full((B,), 512, dtype=torch.int32), config=layer_triton.LayerConfig(**config), persistent=persistent,
        normed=t(B, C) if chained else None, next_norm=t(C) if chained else None))


def other_kernels() -> list[str]:
    """Decode attention (3 splits and its reduce), the sampler (T = 1), the LM head + sampler at 64
    rows, fused_linear (4 rows, norm + SiLU-gate): Qwen2.5-0.5B shapes, bf16."""
    bf16 = dict(dtype=torch.bfloat16)
    B, H, H_kv, D, S, C, F, V = 64, 14, 2, 64, 768, 896, 4864, 151936
    kv = torch.zeros(B, H_kv, S, D, **bf16)
    lines = compiled([(attention_triton, "_attention_split_kernel"), (attention_triton, "_attention_reduce_kernel")],
                     lambda: attention_triton.decode_attention_triton(
                         torch.zeros(B, H, D, **bf16), kv, kv, torch.zeros(B, dtype=torch.int32),
                         torch.full((B,), 512, dtype=torch.int32), num_splits=3))
    lines += compiled([(sampling_triton, "_sample_split_kernel"), (sampling_triton, "_sample_reduce_kernel")],
                      lambda: sampling_triton.sample_triton(torch.zeros(B, V), torch.rand(B, V), 1.0))
    lines += compiled([(rmsnorm_triton, "_rmsnorm_kernel"), (head_sample_triton, "_head_sample_tile_kernel"),
                       (head_sample_triton, "_sample_reduce_kernel")],
                      lambda: head_sample_triton.head_sample_triton(torch.zeros(B, C, **bf16), torch.ones(C, **bf16),
                                                                    1e-6, torch.zeros(V, C, **bf16), torch.rand(B, V),
                                                                    1.0))
    lines += compiled([(fused_linear_triton, "_fused_linear_kernel")],
                      lambda: fused_linear_triton.fused_linear_triton(
                          torch.zeros(4, C, **bf16), (torch.zeros(F, C, **bf16), torch.zeros(F, C, **bf16)),
                          norm_weight=torch.ones(C, **bf16), eps=1e-6, silu_mul=True))
    return lines


if __name__ == "__main__":
    for config in (dict(), dict(down_splits=4), dict(chained=True), dict(chained=True, down_splits=4),
                   dict(chained=True, down_splits=4, prefetch=(2, 3, 4, 6, 7)),
                   dict(chained=True, down_splits=4, prefetch=(2, 3, 4, 6, 7), persistent=True),
                   dict(chained=True, stream_k=(2, 4, 6, 7), stream_k_items=132),
                   dict(chained=True, stream_k=(2, 4, 6, 7), stream_k_items=132, persistent=True)):
        for line in layer_stages(896, 4864, 14, 2, 64, 64, torch.bfloat16, **config):   # Qwen2.5-0.5B, 64 rows
            print(config, line)
    for line in other_kernels():
        print(line)

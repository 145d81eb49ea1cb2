"""Kernel benchmark (CUDA only): each Triton kernel against its PyTorch reference, eager and
torch.compile'd (and decode attention also against SDPA with a mask, what the model would use
without the kernel), and against the HBM bandwidth measured in the same run.

    python -m bench.kernels                          # all kernels
    python -m bench.kernels --only decode_attention  # one or more of: rmsnorm rope rope_cache qkv_rope_cache
                                                     #   decode_attention sample fused_linear silu_mul
                                                     #   record_step logit_stats decode_layer head_sample
    python -m bench.kernels --only fused_linear --sweep   # + every block config, to tune the defaults

Every time is a CUDA-graph replay of many calls (triton.testing.do_bench_cudagraph), so Python
launch overhead is out, as in the sampler's captured decode step. "bytes" is the least the kernel
must move (inputs read once, outputs written once; for decode attention only the valid cache
range); GB/s and the fraction of HBM bandwidth follow from it. The bandwidth is a 2 GiB
device-to-device copy. Cases whose bytes fit in L2 are marked "L2": their data stays in cache
between replays, so their GB/s may exceed HBM and their time, not their bandwidth, is the number
to read. One JSON line per case goes to bench/results/kernels.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.launch_capture import captured_launches
from bench.results_log import append_result

DEVICE = torch.device("cuda")
KERNELS = ("rmsnorm", "rope", "rope_cache", "qkv_rope_cache", "decode_attention", "sample", "fused_linear",
           "silu_mul", "record_step", "logit_stats", "decode_layer", "head_sample")
QWEN_VOCAB = 151_936
MODELS = {"0.5B": dict(hidden=896, H_q=14, H_kv=2, D=64, ffn=4864),
          "3B": dict(hidden=2048, H_q=16, H_kv=2, D=128, ffn=11008)}
SWEEP = False                                     # --sweep: time every fused_linear block config too


@dataclasses.dataclass(frozen=True)
class Case:
    kernel: str
    name: str
    shape: dict
    bytes: int
    triton: Callable[[], object]
    reference: Callable[[], object]
    baselines: dict[str, Callable[[], object]]      # more implementations to time (SDPA, variants)
    part_bytes: dict[str, int] = dataclasses.field(default_factory=dict)   # baselines that run a part of
                                                    # the kernel (a stage alone): the least bytes it moves


def _time_us(fn: Callable[[], object]) -> float:
    import triton.testing
    return triton.testing.do_bench_cudagraph(fn, rep=20 if SWEEP else 100) * 1e3


def _hbm_bytes_per_s() -> float:
    import triton.testing
    src = torch.empty(2**30, dtype=torch.int16, device=DEVICE)          # 2 GiB
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=5, rep=200)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _rmsnorm_case(model: str, rows: int) -> Case:
    from deepretrieval.kernels.rmsnorm import rmsnorm_reference
    from deepretrieval.kernels.rmsnorm_triton import rmsnorm_triton
    N = MODELS[model]["hidden"]
    x, r = torch.randn(2, rows, N, device=DEVICE, dtype=torch.bfloat16)
    w = torch.randn(N, device=DEVICE, dtype=torch.bfloat16)
    return Case("rmsnorm", f"{model} rows={rows} fused residual", dict(rows=rows, hidden=N),
                _nbytes(x, r, w) + 2 * _nbytes(x),
                lambda: rmsnorm_triton(x, w, 1e-6, r), lambda: rmsnorm_reference(x, w, 1e-6, r), {})


def _silu_mul_case(model: str, rows: int) -> Case:
    from deepretrieval.kernels.silu_mul import silu_mul_reference
    from deepretrieval.kernels.silu_mul_triton import silu_mul_triton
    F_ = MODELS[model]["ffn"]
    gate, up = torch.randn(rows, 2 * F_, device=DEVICE, dtype=torch.bfloat16).chunk(2, dim=1)   # views
    return Case("silu_mul", f"{model} rows={rows}", dict(rows=rows, ffn=F_), 3 * _nbytes(gate),
                lambda: silu_mul_triton(gate, up), lambda: silu_mul_reference(gate, up), {})


def _rope_case(model: str, B: int, T: int) -> Case:
    from deepretrieval.kernels.rope import rope_reference
    from deepretrieval.kernels.rope_triton import rope_triton
    H_q, H_kv, D = MODELS[model]["H_q"], MODELS[model]["H_kv"], MODELS[model]["D"]
    q = torch.randn(B, T, H_q, D, device=DEVICE, dtype=torch.bfloat16)
    k = torch.randn(B, T, H_kv, D, device=DEVICE, dtype=torch.bfloat16)
    cos, sin = torch.randn(2, 8192, D, device=DEVICE)
    pos = torch.randint(0, 8192, (B, T), device=DEVICE)
    return Case("rope", f"{model} B={B} T={T}", dict(B=B, T=T, H_q=H_q, H_kv=H_kv, D=D),
                2 * _nbytes(q, k) + 2 * B * T * D * 4 + _nbytes(pos),
                lambda: rope_triton(q, k, cos, sin, pos), lambda: rope_reference(q, k, cos, sin, pos), {})


def _rope_cache_case(model: str, B: int) -> Case:
    from deepretrieval.kernels.rope_cache import rope_cache_reference
    from deepretrieval.kernels.rope_cache_triton import rope_cache_triton
    H_q, H_kv, D = MODELS[model]["H_q"], MODELS[model]["H_kv"], MODELS[model]["D"]
    qkv = torch.randn(B, (H_q + 2 * H_kv) * D, device=DEVICE, dtype=torch.bfloat16)
    q, k, v = (t.view(B, -1, D) for t in qkv.split((H_q * D, H_kv * D, H_kv * D), dim=-1))
    kc, vc = torch.zeros(2, B, H_kv, 512, D, device=DEVICE, dtype=torch.bfloat16)
    cos, sin = torch.randn(2, 512, D, device=DEVICE)
    pos, slot = torch.randint(0, 512, (B,), device=DEVICE), torch.tensor([100], device=DEVICE)
    args = (q, k, v, cos, sin, pos, kc, vc, slot)
    return Case("rope_cache", f"{model} B={B}", dict(B=B, H_q=H_q, H_kv=H_kv, D=D),
                2 * _nbytes(qkv) + 2 * B * D * 4 + _nbytes(pos),
                lambda: rope_cache_triton(*args), lambda: rope_cache_reference(*args), {})


def _qkv_rope_cache_case(model: str, rows: int) -> Case:
    """The decode layer's attention input in one kernel; baseline: the two Triton kernels it fuses
    (fused_linear's qkv, then rope_cache)."""
    from deepretrieval.kernels.fused_linear_triton import fused_linear_triton
    from deepretrieval.kernels.qkv_rope_cache import qkv_rope_cache_reference
    from deepretrieval.kernels.qkv_rope_cache_triton import qkv_rope_cache_triton
    from deepretrieval.kernels.rope_cache_triton import rope_cache_triton
    m = MODELS[model]
    C, H_q, H_kv, D = m["hidden"], m["H_q"], m["H_kv"], m["D"]

    def t(*shape):
        return 0.05 * torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16)

    x, nw = t(rows, C), 1 + t(C)
    weights = (t(H_q * D, C), t(H_kv * D, C), t(H_kv * D, C))
    biases = tuple(t(w.shape[0]) for w in weights)
    kc, vc = torch.zeros(2, rows, H_kv, 512, D, device=DEVICE, dtype=torch.bfloat16)
    cos, sin = torch.randn(2, 512, D, device=DEVICE)
    pos, slot = torch.randint(0, 512, (rows,), device=DEVICE), torch.tensor([100], device=DEVICE)
    tail = (cos, sin, pos, kc, vc, slot)

    def two_kernels():
        qkv = fused_linear_triton(x, weights, biases, norm_weight=nw, eps=1e-6)
        q, k, v = (u.view(rows, -1, D) for u in qkv.split((H_q * D, H_kv * D, H_kv * D), dim=-1))
        return rope_cache_triton(q, k, v, *tail)

    return Case("qkv_rope_cache", f"{model} rows={rows}", dict(rows=rows, K=C, H_q=H_q, H_kv=H_kv, D=D),
                _nbytes(*weights, *biases, x, nw) + rows * (H_q + 2 * H_kv) * D * 2,
                lambda: qkv_rope_cache_triton(x, weights, biases, nw, 1e-6, *tail),
                lambda: qkv_rope_cache_reference(x, weights, biases, nw, 1e-6, *tail),
                {"fused_linear+rope_cache": two_kernels})


def _record_step_case(B: int) -> Case:
    from deepretrieval.kernels.record_step import record_step_reference
    from deepretrieval.kernels.record_step_triton import record_step_triton
    ids, lengths, last = torch.randint(0, QWEN_VOCAB, (3, B), device=DEVICE)
    logprobs = -torch.rand(B, device=DEVICE)
    tokens = torch.zeros(B, 512, dtype=torch.long, device=DEVICE)
    logprobs_out = torch.zeros(B, 512, device=DEVICE)
    done = torch.zeros(B, dtype=torch.bool, device=DEVICE)
    # a graph replays the call many times: the column stays in range because step is reset
    step, stops = torch.zeros(1, dtype=torch.long, device=DEVICE), torch.tensor([151643, 151645], device=DEVICE)
    counters = (torch.zeros(1, dtype=torch.long, device=DEVICE), torch.zeros(B, dtype=torch.long, device=DEVICE),
                torch.zeros(B, dtype=torch.int32, device=DEVICE))
    args = (ids, logprobs, tokens, logprobs_out, lengths, done, step, stops, 0, last, counters)

    def run(fn):
        step.zero_()
        fn(*args)

    return Case("record_step", f"B={B}", dict(B=B), B * (8 + 4 + 8 + 4 + 8 + 1 + 8 + 8 + 4) * 2,
                lambda: run(record_step_triton), lambda: run(record_step_reference), {})


def _fused_linear_case(model: str, rows: int, call: str) -> Case:
    """One of a decode layer's fused projections; baselines: the bare cuBLAS projections (no norm,
    bias, gate or residual), and with --sweep every block config."""
    from deepretrieval.kernels.fused_linear import fused_linear_reference
    from deepretrieval.kernels.fused_linear_triton import LinearConfig, fused_linear_triton
    m = MODELS[model]
    C, F_, q_size, kv_size = m["hidden"], m["ffn"], m["H_q"] * m["D"], m["H_kv"] * m["D"]

    def t(*shape):
        return 0.05 * torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16)

    x, nw = t(rows, C), 1 + t(C)
    args, kw = {
        "qkv": lambda: ((x, (t(q_size, C), t(kv_size, C), t(kv_size, C)), (t(q_size), t(kv_size), t(kv_size))),
                        dict(norm_weight=nw, eps=1e-6)),
        "o": lambda: ((t(rows, q_size), (t(C, q_size),)), dict(residual=x)),
        "gate_up": lambda: ((x, (t(F_, C), t(F_, C))), dict(norm_weight=nw, eps=1e-6, silu_mul=True)),
        "down": lambda: ((t(rows, F_), (t(C, F_),)), dict(residual=x)),
        "head": lambda: ((x, (t(QWEN_VOCAB, C),)), dict(norm_weight=nw, eps=1e-6, out_float=True)),
    }[call]()
    weights = args[1]
    baselines = {"cublas": lambda: [F.linear(args[0], w) for w in weights]}
    if SWEEP:
        for bn in ((2, 4, 8, 16) if rows == 1 else (16, 32)):
            for bk in ((512, 1024, 2048) if rows == 1 else (128, 256)):
                for warps in ((4, 8) if rows == 1 else (4,)):
                    cfg = LinearConfig(bn, bk, warps)
                    baselines[f"bn{bn} bk{bk} w{warps}"] = (
                        lambda cfg=cfg: fused_linear_triton(*args, **kw, config=cfg))
    out_bytes = rows * (weights[0].shape[0] if kw.get("silu_mul") else sum(w.shape[0] for w in weights)) * 2
    return Case("fused_linear", f"{model} {call} rows={rows}", dict(rows=rows, call=call, K=args[0].shape[1]),
                _nbytes(*weights, args[0]) + out_bytes,
                lambda: fused_linear_triton(*args, **kw), lambda: fused_linear_reference(*args, **kw), baselines)


def _attention_case(model: str, B: int, S_max: int, max_pad: int) -> Case:
    from deepretrieval.kernels.decode_attention import decode_attention_reference
    from deepretrieval.kernels.decode_attention_triton import decode_attention_triton
    H_q, H_kv, D = MODELS[model]["H_q"], MODELS[model]["H_kv"], MODELS[model]["D"]
    q = torch.randn(B, H_q, D, device=DEVICE, dtype=torch.bfloat16)
    k, v = torch.randn(2, B, H_kv, S_max, D, device=DEVICE, dtype=torch.bfloat16)
    start = torch.randint(0, max_pad + 1, (B,), device=DEVICE, dtype=torch.int32)
    end = torch.full((B,), S_max, device=DEVICE, dtype=torch.int32)
    pos = torch.arange(S_max, device=DEVICE)
    mask = ((pos >= start[:, None]) & (pos < end[:, None]))[:, None, None, :]       # [B, 1, 1, S]
    keys = int((end - start).sum())

    def triton_with(**knobs):
        return lambda: decode_attention_triton(q, k, v, start, end, **knobs)

    baselines = {"sdpa": lambda: F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask,
                                                                enable_gqa=True),
                 "triton block_n=32": triton_with(block_n=32), "triton block_n=128": triton_with(block_n=128),
                 "triton splits=1": triton_with(num_splits=1)}
    return Case("decode_attention", f"{model} B={B} ctx={S_max} pad<={max_pad}",
                dict(B=B, S_max=S_max, H_q=H_q, H_kv=H_kv, D=D, mean_len=keys / B),
                2 * keys * H_kv * D * 2 + 2 * _nbytes(q) + 2 * _nbytes(start),
                triton_with(), lambda: decode_attention_reference(q, k, v, start, end), baselines)


def _sample_case(B: int, temperature: float) -> Case:
    from deepretrieval.kernels.sampling import sample_reference
    from deepretrieval.kernels.sampling_triton import sample_triton
    logits = torch.randn(B, QWEN_VOCAB, device=DEVICE, dtype=torch.bfloat16)
    uniform = torch.rand(B, QWEN_VOCAB, device=DEVICE)
    read = _nbytes(logits) + (_nbytes(uniform) if temperature else 0)
    return Case("sample", f"V={QWEN_VOCAB} B={B} T={temperature}",
                dict(B=B, V=QWEN_VOCAB, temperature=temperature), read + B * 12,
                lambda: sample_triton(logits, uniform, temperature),
                lambda: sample_reference(logits, uniform, temperature), {})


def _logit_stats_case(which: str) -> Case:
    """The RL response head's chunks at Qwen2.5's vocabulary (rl/response_head.py's default 256 MiB
    chunk bound): forward statistics of 441 rows, the gradient of 16,384 tokens x 4,096 columns.
    Baselines: other block sizes of the kernel."""
    from deepretrieval.kernels.logit_stats import logit_grad_reference, logit_stats_reference
    from deepretrieval.kernels.logit_stats_triton import logit_grad_triton, logit_stats_triton
    N = 441 if which == "stats" else 16_384
    V = QWEN_VOCAB if which == "stats" else 4096
    logits = torch.randn(N, V, device=DEVICE, dtype=torch.bfloat16)
    tokens = torch.randint(0, V, (N,), device=DEVICE)
    if which == "stats":
        return Case("logit_stats", f"stats N={N} V={V}", dict(N=N, V=V), _nbytes(logits) + N * 20,
                    lambda: logit_stats_triton(logits, tokens, 1.0, True),
                    lambda: logit_stats_reference(logits, tokens, 1.0, True),
                    {f"bv{bv}": (lambda bv=bv: logit_stats_triton(logits, tokens, 1.0, True, block_v=bv))
                     for bv in (1024, 2048, 8192)})
    lse, _, pz = logit_stats_reference(logits, tokens, 1.0, True)
    dlogp, dent = torch.randn(2, N, device=DEVICE)
    return Case("logit_stats", f"grad N={N} v={V}", dict(N=N, V=V), 2 * _nbytes(logits) + N * 24,
                lambda: logit_grad_triton(logits, 0, tokens, lse, pz, dlogp, dent, 1.0),
                lambda: logit_grad_reference(logits, 0, tokens, lse, pz, dlogp, dent, 1.0), {})


def _decode_layer_case(model: str, B: int) -> Case:
    """A whole decode layer at rollout shapes (context 512 of a 768-slot cache), over copies of the
    layer's weights that together exceed L2, as in a step. Baselines: the persistent launch; the
    layer inside a stack (its input norm given, the next layer's written by its last stage, as
    kernels.decode_layer.decode_layers runs it); the persistent launch, also with the L2 prefetch
    and with two programs a SM; stream-K projections (work items, one a SM, sharing the tiles' K
    blocks), staged and persistent; each projection stage and the attention alone, with the default
    tiles and with stream-K (`_stage_launches`); with --sweep other block configs."""
    from deepretrieval.kernels.decode_layer import LAYER_SYNC_WORDS, LayerWeights, decode_layer_reference
    from deepretrieval.kernels.decode_layer_triton import decode_layer_triton, layer_config_from_env
    m = MODELS[model]
    C, F_, H_q, H_kv, D = m["hidden"], m["ffn"], m["H_q"], m["H_kv"], m["D"]
    S, ctx = 768, 512

    def t(*shape):
        return 0.05 * torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16)

    def weights():
        return LayerWeights(1 + t(C), t(H_q * D, C), t(H_kv * D, C), t(H_kv * D, C), t(C, H_q * D), 1 + t(C),
                            t(F_, C), t(F_, C), t(C, F_), (t(H_q * D), t(H_kv * D), t(H_kv * D)))
    one = sum(_nbytes(*w.tensors()) for w in [weights()])
    copies = [weights() for _ in range(max(1, -(-torch.cuda.get_device_properties(0).L2_cache_size * 2 // one)))]
    layer = itertools.cycle(copies)
    x = t(B, C)
    k, v = t(2, B, H_kv, S, D)
    cos, sin = torch.randn(2, S, D, device=DEVICE)
    pos = torch.full((B,), ctx - 1, device=DEVICE)
    slot = torch.tensor([ctx - 1], device=DEVICE)
    start = torch.zeros(B, device=DEVICE, dtype=torch.int32)
    end = torch.full((B,), ctx, device=DEVICE, dtype=torch.int32)
    sync = torch.zeros(LAYER_SYNC_WORDS, device=DEVICE, dtype=torch.int32)

    def run(fn, **kw):
        return lambda: fn(x, next(layer), 1e-6, cos, sin, pos, k, v, slot, start, end, **kw)
    default = layer_config_from_env()                 # DEEPRETRIEVAL_LAYER_CONFIG, if set
    persistent = {"": {}, ", prefetch": dict(prefetch=(2, 3, 4, 6, 7)),        # the queue's variants
                  ", 2 a SM": dict(programs_per_sm=2, num_stages=2)}
    baselines = {f"persistent{name}": run(decode_layer_triton, sync=sync, persistent=True,
                                          config=dataclasses.replace(default, **change))
                 for name, change in persistent.items()}
    baselines["in a stack"] = run(decode_layer_triton, sync=sync, normed=t(B, C), next_norm=1 + t(C))
    for stages, persistent_launch in (((2, 4, 6, 7), False), ((2, 4, 6), False), ((6, 7), False),
                                      ((2, 4, 6, 7), True)):
        baselines[f"{'persistent, ' if persistent_launch else ''}stream-K {','.join(map(str, stages))}"] = run(
            decode_layer_triton, sync=sync, persistent=persistent_launch,
            config=dataclasses.replace(default, stream_k=stages))
    kv_bytes = 2 * B * H_kv * ctx * D * k.element_size()
    first = copies[0]
    stage_bytes = {2: _nbytes(first.wq, first.wk, first.wv, *first.qkv_bias), 3: kv_bytes, 4: _nbytes(first.wo),
                   6: _nbytes(first.gate, first.up), 7: _nbytes(first.down)}   # weights; the attention's keys/values
    part_bytes = {}
    for name, config in (("", default), (", stream-K", dataclasses.replace(default, stream_k=(2, 4, 6, 7)))):
        for stage in () if SWEEP else stage_bytes:
            part_bytes[f"stage {stage} alone{name}"] = stage_bytes[stage]
            baselines[f"stage {stage} alone{name}"] = _in_turn(_stage_launches(
                stage, [functools.partial(decode_layer_triton, x, w, 1e-6, cos, sin, pos, k, v, slot, start, end,
                                          sync=sync, config=config) for w in copies]))
    if SWEEP:                                           # one knob at a time away from the default
        for change in (dict(qkv=(16, 128)), dict(qkv=(32, 256)), dict(qkv=(64, 128)), dict(o=(32, 128)),
                       dict(o=(16, 256)), dict(gate_up=(64, 128)), dict(gate_up=(16, 128)),
                       dict(gate_up=(32, 256)), dict(down=(32, 128)), dict(down=(16, 256)), dict(down=(64, 256)),
                       dict(down_splits=1), dict(down_splits=2), dict(down_splits=3), dict(attention_block=64),
                       dict(num_stages=3), dict(num_stages=5), dict(num_warps=8), dict(block_rows=128),
                       dict(prefetch=(2, 3, 4, 6, 7)), dict(prefetch=(3,)), dict(prefetch=(2, 4)),
                       dict(prefetch=(6, 7)),
                       # two programs a SM where shared memory allows (fewer pipeline stages): more
                       # bytes in flight for the stages whose tiles do not fill the GPU
                       dict(num_stages=2), dict(num_stages=3, gate_up=(32, 128)),
                       dict(num_stages=2, gate_up=(32, 128)), dict(num_stages=2, gate_up=(32, 128), down=(16, 256)),
                       dict(num_stages=3, gate_up=(32, 128), qkv=(16, 64), o=(16, 64)),
                       # stream-K: finer K blocks balance the items better, wider tiles read x less often
                       dict(stream_k=(2, 4, 6, 7), gate_up=(64, 64)), dict(stream_k=(2, 4, 6, 7), gate_up=(128, 64)),
                       dict(stream_k=(2, 4, 6, 7), qkv=(32, 128), o=(32, 128)),
                       dict(stream_k=(2, 4, 6, 7), qkv=(16, 64), o=(16, 64), gate_up=(64, 64), down=(32, 128)),
                       dict(stream_k=(2, 4, 6, 7), down=(64, 128)), dict(stream_k=(2, 4, 6, 7), down=(16, 256))):
            baselines[" ".join(f"{k}={v}" for k, v in change.items())] = run(
                decode_layer_triton, sync=sync, config=dataclasses.replace(default, **change))
    return Case("decode_layer", f"{model} B={B} ctx={ctx}", dict(B=B, ctx=ctx, copies=len(copies)),
                one + kv_bytes + 10 * _nbytes(x), run(decode_layer_triton, sync=sync),
                run(decode_layer_reference), baselines, part_bytes)


def _stage_launches(stage: int, calls: list[Callable[[], object]]) -> list[tuple]:
    """The launches of one stage of the decode layer kernel, one per call of `calls` (each a
    decode_layer_triton call on its own layer copy): each call's launches are captured, then run
    once in order, so that the buffers the stage reads hold what the stages before wrote."""
    import deepretrieval.kernels.decode_layer_triton as layer_triton
    stage_launches = []
    for call in calls:
        with captured_launches((layer_triton, "_decode_layer_kernel")) as launches:
            call()
        for kernel, grid, args, kw in launches:
            kernel[grid](*args, **kw)
        stage_launches += [launch for launch in launches if launch[3]["STAGE"] == stage]
    return stage_launches


def _in_turn(launches: list[tuple]) -> Callable[[], None]:
    """A function that runs the next of `launches` ((kernel, grid, args, kw)) at each call."""
    turn = itertools.cycle(launches)

    def launch():
        kernel, grid, args, kw = next(turn)
        kernel[grid](*args, **kw)
    return launch


def _head_sample_case(model: str, B: int, temperature: float) -> Case:
    """The decode step's final norm, LM head and sampler at Qwen2.5's vocabulary. Baselines: what the
    fast decoder ran before (cuBLAS head, logits cast to fp32, then the Triton sampler), and with
    --sweep other tile configs."""
    from deepretrieval.kernels.fused_linear import fused_linear_reference
    from deepretrieval.kernels.head_sample import head_sample_reference
    from deepretrieval.kernels.head_sample_triton import HeadSampleConfig, head_sample_triton
    from deepretrieval.kernels.sampling_triton import sample_triton
    C = MODELS[model]["hidden"]
    x = torch.randn(B, C, device=DEVICE, dtype=torch.bfloat16)
    norm = 1 + 0.05 * torch.randn(C, device=DEVICE, dtype=torch.bfloat16)
    head = 0.02 * torch.randn(QWEN_VOCAB, C, device=DEVICE, dtype=torch.bfloat16)
    uniform = torch.rand(B, QWEN_VOCAB, device=DEVICE)

    def run(**kw):
        return lambda: head_sample_triton(x, norm, 1e-6, head, uniform, temperature, **kw)

    def cublas_then_sampler():
        logits = fused_linear_reference(x, (head,), norm_weight=norm, eps=1e-6, out_float=True)
        return sample_triton(logits, uniform, temperature)
    baselines = {"cuBLAS head + Triton sampler": cublas_then_sampler}
    if SWEEP:
        for bn, bk, stages, warps in ((128, 128, 4, 8), (128, 64, 4, 8), (128, 128, 2, 8), (64, 128, 4, 8),
                                      (64, 64, 4, 4), (256, 64, 3, 8), (128, 64, 3, 4), (128, 128, 4, 4)):
            baselines[f"n{bn} k{bk} s{stages} w{warps}"] = run(config=HeadSampleConfig(
                block_n=bn, block_k=bk, num_stages=stages, num_warps=warps))

    noise = _nbytes(uniform) if temperature else 0
    return Case("head_sample", f"{model} B={B} T={temperature}", dict(B=B, V=QWEN_VOCAB, temperature=temperature),
                _nbytes(head, x) + noise + B * 12, run(),
                lambda: head_sample_reference(x, norm, 1e-6, head, uniform, temperature), baselines)


# Decode shapes of both models, plus one prefill-sized case where it tells bandwidth. Attention:
# long single contexts, the RL rollout (prompt 256 + 512 new, ragged prompts), the largest batch.
CASES = {
    "rmsnorm": lambda: (_rmsnorm_case(*c) for c in (("0.5B", 1), ("0.5B", 64), ("3B", 128), ("3B", 16384))),
    "rope": lambda: (_rope_case(*c) for c in (("0.5B", 1, 1), ("0.5B", 64, 1), ("3B", 128, 1), ("3B", 64, 256))),
    "decode_attention": lambda: (_attention_case(*c) for c in (
        ("0.5B", 1, 4096, 0), ("3B", 1, 4096, 0), ("0.5B", 64, 768, 128), ("3B", 64, 768, 128),
        ("0.5B", 128, 4096, 0), ("3B", 128, 4096, 0))),
    "sample": lambda: (_sample_case(*c) for c in ((1, 1.0), (64, 1.0), (128, 1.0), (64, 0.0))),
    "rope_cache": lambda: (_rope_cache_case(*c) for c in (("0.5B", 1), ("3B", 1), ("3B", 64))),
    "qkv_rope_cache": lambda: (_qkv_rope_cache_case(*c) for c in (("0.5B", 1), ("3B", 1), ("3B", 16))),
    "silu_mul": lambda: (_silu_mul_case(*c) for c in (("0.5B", 64), ("3B", 64), ("3B", 256))),
    "record_step": lambda: (_record_step_case(B) for B in (1, 64, 128)),
    "decode_layer": lambda: (_decode_layer_case(model, B) for model in MODELS for B in ((64,) if SWEEP else (64, 256))),
    "fused_linear": lambda: (_fused_linear_case(model, rows, call) for model in MODELS
                             for rows in ((1,) if SWEEP else (1, 16))
                             for call in ("qkv", "o", "gate_up", "down", "head")),
    "logit_stats": lambda: (_logit_stats_case(w) for w in ("stats", "grad")),
    "head_sample": lambda: (_head_sample_case(*c) for c in (
        ("0.5B", 64, 1.0), ("3B", 64, 1.0), ("0.5B", 64, 0.0), ("0.5B", 256, 1.0), ("0.5B", 512, 1.0))),
}


def _run_case(case: Case, hbm: float, l2_bytes: int) -> dict:
    times = {"triton": _time_us(case.triton), "eager": _time_us(case.reference)}
    try:
        times["compiled"] = None if SWEEP else _time_us(torch.compile(case.reference, dynamic=False))
    except Exception as exc:                 # a compile failure must not lose the other numbers
        print(f"  torch.compile failed for {case.kernel} {case.name}: {type(exc).__name__}: {exc}"[:300])
        times["compiled"] = None
    times.update({name: _time_us(fn) for name, fn in case.baselines.items()})
    gbps = case.bytes / (times["triton"] * 1e-6) / 1e9
    parts = {name: {"bytes": n, "GBps": n / (times[name] * 1e-6) / 1e9, "hbm_fraction": n / (times[name] * 1e-6) / hbm}
             for name, n in case.part_bytes.items()}
    return {"kernel": case.kernel, "case": case.name, **case.shape, "dtype": "bfloat16",
            "bytes": case.bytes, "l2_resident": case.bytes < l2_bytes, "us": times,
            "speedup_vs": {name: t / times["triton"] for name, t in times.items() if name != "triton" and t},
            "triton_GBps": gbps, "hbm_GBps": hbm / 1e9, "hbm_fraction": gbps * 1e9 / hbm, "parts": parts}


def _print_row(rec: dict) -> None:
    us, speedup = rec["us"], rec["speedup_vs"]
    compiled = (f"{us['compiled']:9.1f} ({speedup['compiled']:5.2f}x)" if us["compiled"]
                else f"{'skipped' if SWEEP else 'failed':>17s}")
    others = "  ".join(f"{name} {t:.1f} ({speedup[name]:.2f}x)" for name, t in us.items()
                       if name not in ("triton", "eager", "compiled"))
    print(f"{rec['kernel']:17s} {rec['case']:32s} {us['triton']:9.1f} {us['eager']:9.1f} "
          f"({speedup['eager']:5.2f}x) {compiled} {rec['triton_GBps']:7.0f} "
          f"{100 * rec['hbm_fraction']:5.1f}%{' L2' if rec['l2_resident'] else '   '}  {others}")
    if rec["parts"]:
        print("    parts: " + "  ".join(f"{name} {us[name]:.2f} us {p['GBps']:.0f} GB/s {100 * p['hbm_fraction']:.0f}%"
                                       for name, p in rec["parts"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--sweep", action="store_true", help="time every fused_linear block config too")
    args = parser.parse_args(argv)
    global SWEEP
    SWEEP = args.sweep
    if not torch.cuda.is_available():
        raise SystemExit("bench.kernels needs a CUDA GPU and none is present: run it on the GPU machine "
                         "(python -m bench.kernels)")
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    hbm = _hbm_bytes_per_s()
    print(f"{props.name}: device copy {hbm / 1e9:.0f} GB/s, L2 {props.L2_cache_size / 2**20:.0f} MiB; "
          "times in us, (speedup) = other's time / triton's")
    print(f"{'kernel':17s} {'case':32s} {'triton':>9s} {'eager':>9s} {'(speedup)':9s} {'compiled':>9s} "
          f"{'(speedup)':9s} {'GB/s':>7s} {'HBM':>6s}     other")
    with torch.no_grad():
        for kernel in args.only:
            for case in CASES[kernel]():
                rec = _run_case(case, hbm, props.L2_cache_size)
                if SWEEP:                 # tuning output, not a result: the fastest configs
                    best = sorted((t, n) for n, t in rec["us"].items() if n not in ("triton", "eager", "compiled")
                                  and t)[:3]
                    print(f"{rec['kernel']} {rec['case']:24s} default {rec['us']['triton']:.2f} us; best "
                          + ", ".join(f"{n} {t:.2f}" for t, n in best))
                    continue
                _print_row(rec)
                append_result("kernels", rec)
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

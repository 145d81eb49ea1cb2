"""bench.gpu_profile's summary on made-up kernels: kernel time by kind (our Triton kernels by
name) and launches by kind, GPU busy time as the union of kernel intervals, idle gaps."""
from __future__ import annotations

import types

from torch.autograd import DeviceType

from bench.gpu_profile import kernel_summary


def _event(name, start_us, end_us, device=DeviceType.CUDA):
    return types.SimpleNamespace(name=lambda: name, start_ns=lambda: start_us * 1000,
                                 end_ns=lambda: end_us * 1000,
                                 duration_ns=lambda: (end_us - start_us) * 1000,
                                 device_type=lambda: device)


def test_kernel_summary_union_kinds_and_gaps():
    events = [_event("nvjet_sm90_tst_256x128", 0, 100),
              _event("triton_poi_fused_mul_silu", 50, 120),           # overlaps the GEMM
              _event("aten::mm", 0, 500, DeviceType.CPU),              # host side: ignored
              _event("_stats_kernel", 300, 350),                       # after 180 us idle
              _event("cudnn_generated_fort_native_sdpa", 310, 340),    # inside the last one
              _event("Memset (Device)", 360, 361),                     # after 10 us idle
              _event("_attention_split_kernel", 361, 371),             # our decode kernels
              _event("_fused_linear_kernel", 371, 373),
              _event("_sample_reduce_kernel", 373, 374),
              _event("_rmsnorm_kernel", 374, 378),
              _event("_silu_mul_kernel", 378, 379),
              _event("_decode_layer_kernel", 379, 389),
              _event("_head_sample_tile_kernel", 389, 399),
              _event("void at::native::distribution_elementwise_grid_stride_kernel", 399, 401)]
    prof = types.SimpleNamespace(profiler=types.SimpleNamespace(
        kineto_results=types.SimpleNamespace(events=lambda: events)))
    k = kernel_summary(prof)
    assert k["span"] == 401e-6
    assert abs(k["busy"] - (120 + 50 + 1 + 40) * 1e-6) < 1e-12
    assert [(round(g * 1e6), a, b) for g, a, b in k["gaps"]] == [
        (180, "triton_poi_fused_mul_silu", "_stats_kernel"), (10, "_stats_kernel", "Memset (Device)")]
    by_kind = {kind: round(t * 1e6) for kind, t in k["by_kind"].items()}
    assert by_kind == {"gemm": 100, "attention": 40, "logit_stats (ours)": 50, "fused linear (ours)": 2,
                       "sampling (ours)": 1, "norm, rope, silu (ours)": 5, "optimizer + clip": 0,
                       "inductor fused": 70, "copy / memset": 1, "other": 0, "decode layer (ours)": 10,
                       "LM head + sampler (ours)": 10, "sampling noise (torch RNG)": 2}
    assert k["count_by_kind"] == {"gemm": 1, "attention": 2, "logit_stats (ours)": 1, "fused linear (ours)": 1,
                                  "sampling (ours)": 1, "norm, rope, silu (ours)": 2, "optimizer + clip": 0,
                                  "inductor fused": 1, "copy / memset": 1, "other": 0, "decode layer (ours)": 1,
                                  "LM head + sampler (ours)": 1, "sampling noise (torch RNG)": 1}

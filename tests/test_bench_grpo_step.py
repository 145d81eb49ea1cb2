"""bench.grpo_step's arithmetic: the executed-FLOP count by hand, and the profile summary (kernel
time by kind, GPU busy time as the union of kernel intervals, idle gaps) on made-up kernels."""
from __future__ import annotations

import dataclasses
import types

from torch.autograd import DeviceType

from bench import grpo_step
from bench.grpo_step import TINY, kernel_summary, update_flops


def test_update_flops_by_hand():
    cfg = dataclasses.replace(TINY, vocab_size=10, hidden_size=4, num_heads=2, head_dim=2,
                              num_layers=3, tie_word_embeddings=True)
    n_params = 1000
    # per sequence of 6 prompt + 2 response tokens: trunk 2 * (1000 - 40) * 8, head 2 * 40 * 2,
    # attention 2 * 2 * (64 / 2) * 4 * 3; forward + backward = 3x; 5 sequences
    want = 3 * 5 * (2 * 960 * 8 + 2 * 40 * 2 + 4 * 32 * 4 * 3)
    assert update_flops(cfg, n_params, 5, 6, 2.0) == want
    untied = dataclasses.replace(cfg, tie_word_embeddings=False)     # lm_head is a weight of its own
    assert update_flops(untied, n_params, 5, 6, 2.0) == want - 3 * 5 * 2 * 40 * 8


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
              _event("Memset (Device)", 360, 361)]                     # after 10 us idle
    prof = types.SimpleNamespace(profiler=types.SimpleNamespace(
        kineto_results=types.SimpleNamespace(events=lambda: events)))
    k = kernel_summary(prof)
    assert k["span"] == 361e-6
    assert abs(k["busy"] - (120 + 50 + 1) * 1e-6) < 1e-12
    assert [(round(g * 1e6), a, b) for g, a, b in k["gaps"]] == [
        (180, "triton_poi_fused_mul_silu", "_stats_kernel"), (10, "_stats_kernel", "Memset (Device)")]
    by_kind = {kind: round(t * 1e6) for kind, t in k["by_kind"].items()}
    assert by_kind == {"gemm": 100, "attention": 30, "logit_stats (ours)": 50, "optimizer + clip": 0,
                       "inductor fused": 70, "copy / memset": 1, "other": 0}


def test_tiny_run_smoke(capsys):
    assert grpo_step.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    assert "train MFU (update)" in out and "executed FLOPs" in out

"""What the GPU did during a profiled piece of work: kernel time by kind, idle gaps, the top kernels.

    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        work(); torch.cuda.synchronize()
    print_kernel_profile("rollout", prof, cuda=True)

Used by bench.grpo_step --profile (prepare and update passes) and bench.fast_generate --profile
(one rollout call).
"""
from __future__ import annotations

import re

# First match wins; names are those torch.profiler reports for cuBLAS (nvjet / cutlass / gemm),
# cuDNN / flash attention, our Triton kernels (deepretrieval/kernels/*_triton.py), inductor's fused
# kernels, and torch's optimiser.
KERNEL_CATEGORIES = (
    ("gemm", re.compile(r"nvjet|gemm|cutlass|xmma|cublas", re.I)),
    ("attention", re.compile(r"sdpa|fmha|flash|attention|cudnn", re.I)),
    ("logit_stats (ours)", re.compile(r"^_(stats|grad)_kernel")),
    ("fused linear (ours)", re.compile(r"^_(fused_linear|qkv_rope_cache)_kernel")),
    ("decode layer (ours)", re.compile(r"^_decode_layer_kernel")),
    ("LM head + sampler (ours)", re.compile(r"^_head_sample_tile_kernel")),
    ("sampling (ours)", re.compile(r"^_(sample_split|sample_reduce|record_step)_kernel")),
    ("sampling noise (torch RNG)", re.compile(r"distribution_elementwise")),
    ("norm, rope, silu (ours)", re.compile(r"^_(rmsnorm|rope|rope_cache|silu_mul)_kernel")),
    ("optimizer + clip", re.compile(r"multi_tensor|foreach|fused_adam|adam", re.I)),
    ("inductor fused", re.compile(r"^triton_")),
    ("copy / memset", re.compile(r"memcpy|memset|copy", re.I)),
    ("other", re.compile(r"")),
)


def kernel_summary(prof) -> dict:
    """GPU time and kernel count per KERNEL_CATEGORIES entry (seconds; launches), the busy time
    (union of kernel intervals), the span from the first kernel's start to the last one's end, and
    the largest idle gaps (seconds, kernel before, kernel after)."""
    from torch.autograd import DeviceType
    kernels = sorted((e for e in prof.profiler.kineto_results.events()
                      if e.device_type() == DeviceType.CUDA), key=lambda e: e.start_ns())
    totals = {name: 0.0 for name, _ in KERNEL_CATEGORIES}
    counts = dict.fromkeys(totals, 0)
    for e in kernels:
        name = next(n for n, pattern in KERNEL_CATEGORIES if pattern.search(e.name()))
        totals[name] += e.duration_ns() / 1e9
        counts[name] += 1
    busy, gaps, end, last = 0, [], None, None
    for e in kernels:
        start, stop = e.start_ns(), e.end_ns()
        if end is not None and start > end:
            gaps.append(((start - end) / 1e9, last.name(), e.name()))
        if end is None or start > end:
            busy, end, last = busy + stop - start, stop, e
        elif stop > end:
            busy, end, last = busy + stop - end, stop, e
    span = (end - kernels[0].start_ns()) if kernels else 0
    return {"by_kind": totals, "count_by_kind": counts, "busy": busy / 1e9, "span": span / 1e9,
            "gaps": sorted(gaps, reverse=True)}


def print_kernel_profile(title: str, prof, cuda: bool) -> None:
    """Print the profiler's table of the 40 costliest kernels (CPU ops without CUDA), then
    `title`, the busy time and (on CUDA) kernel time and launches by kind and the largest idle
    gaps: the summary last, so that the tail of a long log keeps it."""
    table = prof.key_averages()
    print(table.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                      row_limit=40, max_name_column_width=90))
    where = "GPU kernel" if cuda else "CPU op"
    busy = sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in table) / 1e6
    print(f"\n=== {title}, {where} time {busy:.2f} s")
    if not cuda:
        return
    k = kernel_summary(prof)
    print(f"GPU busy {k['busy']:.3f} s of a {k['span']:.3f} s span (idle "
          f"{k['span'] - k['busy']:.3f} s); kernel time and launches by kind:")
    for kind, t in sorted(k["by_kind"].items(), key=lambda kv: -kv[1]):
        n = k["count_by_kind"][kind]
        print(f"  {kind:<24} {t:7.3f} s  {t / max(busy, 1e-9):6.1%}  {n:8d} launches, "
              f"{1e6 * t / max(n, 1):7.1f} us each")
    gaps = k["gaps"]
    print(f"idle gaps: {len(gaps)}, {sum(g for g, *_ in gaps if g >= 1e-4):.3f} s in the "
          f"{sum(g >= 1e-4 for g, *_ in gaps)} of >= 100 us; the largest:")
    for g, before, after in gaps[:8]:
        print(f"  {g * 1e3:7.2f} ms  after {before[:60]}  before {after[:60]}")

"""Fast decoding (model/fast_decode.py) against transformers on a GPU, at batch 1 and batch 64.

    python -m bench.fast_generate                          # both shapes, every case (< 10 min on an H100)
    python -m bench.fast_generate --shapes qwen2.5-0.5b-shape --skip-compiled
    python -m bench.fast_generate --no-cuda-graphs         # our kernels without the CUDA graph
    python -m bench.fast_generate --no-pdl                 # without programmatic dependent launch
    python -m bench.fast_generate --cases rollout --profile --ours-only   # where a rollout's GPU time goes
    DEEPRETRIEVAL_LAYER_KERNEL=off python -m bench.fast_generate --cases rollout --ours-only
                                                           # cuBLAS layers where the layer kernel is the default
    DEEPRETRIEVAL_LAYER_CONFIG="prefetch=3 block_rows=128" python -m bench.fast_generate --cases rollout --ours-only
                                                           # the layer kernel's tiles changed (decode_layer_triton)

Random bf16 weights at Qwen2.5-0.5B and -3B shapes, the same weights on both sides.
  latency  batch 1, prompt 128, 256 new tokens, greedy: tok/s of ours and of three references:
           transformers `generate` (default dynamic cache); `generate` with a static cache, which
           makes transformers compile its decoding step with torch.compile (mode reduce-overhead);
           and a gpt-fast style greedy loop over transformers' model with a static cache, its
           one-token step compiled with torch.compile(mode="reduce-overhead", fullgraph=True) and
           no `generate` at all (what an expert would write by hand). The two compiled references
           run in child processes under a time budget and are reported as "n/a" with the reason
           when they fail or run out. Ours as a fraction of the HBM roofline: bandwidth (measured
           here with a large device copy) / weight bytes read per token.
  rollout  batch 64, prompt 256, 512 new tokens, temperature 1 (the RL case): total tok/s, as a
           fraction of the rollout's roofline (`rollout_roofline`: each decode step reads the
           weights once, every row's KV cache so far and writes and reads its logits over the
           vocabulary, or is bound by its matmul FLOPs where those take longer; the prefill by its
           FLOPs). `--cases rollout256` is the same at batch 256; `--cases grpo512` is GRPO's
           generation batch, 64 prompts x 8 completions (ours prefills each prompt once, and so
           does its roofline; transformers prefills all 512 rows).
tok/s = new tokens of the batch / wall time of one call (prefill included), the median of
--repeats (ours) / --hf-repeats (every reference; default 3) timed calls, each side warmed up
first by an untimed call of the same shape and length, so no number is a cold first call.
Ours builds its decoder and captures the graph in the warm-up call (`first_call_s`); timed calls
reuse it, as consecutive RL rollouts of one shape do. Memory: the peak allocated above what was
allocated before one call (KV cache, activations, logits, graph pool), for both sides.
Each case appends a JSON line to bench/results/fast_generate.jsonl; a markdown table ends the run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback

import torch

from bench.gpu_profile import print_kernel_profile
from bench.generate import QWEN25_SHAPES, cuda_hf, cuda_pair, time_hf, time_ours
from bench.results_log import append_result
from deepretrieval.kernels import use_pdl
from deepretrieval.kernels.decode_layer import layer_kernel_mode
from deepretrieval.model import fast_decode

GiB = 2 ** 30
CASES = {"latency": dict(batch=1, prompt_len=128, new_tokens=256, temperature=0.0),
         "rollout": dict(batch=64, prompt_len=256, new_tokens=512, temperature=1.0),
         "rollout256": dict(batch=256, prompt_len=256, new_tokens=512, temperature=1.0),
         "grpo512": dict(batch=512, prompt_len=256, new_tokens=512, temperature=1.0, group=8)}
DEFAULT_CASES = ("latency", "rollout")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}     # dense bf16 tensor-core peak (SXM)


def hbm_bandwidth(nbytes: int = 2 * GiB, iters: int = 10) -> float:
    """Bytes/s of a device-to-device copy (each copy reads and writes nbytes)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 2 * nbytes * iters / (begin.elapsed_time(end) / 1e3)


def rollout_roofline(cfg, weight_bytes: int, batch: int, prompt_len: int, new_tokens: int,
                     bandwidth: float, peak_flops: float, kv_bytes: int = 2, logit_bytes: int = 4,
                     group: int = 1) -> dict:
    """The fastest a batched generation can run on this memory and these tensor cores.
    Prefill: 2 * params FLOPs per token of the batch / group distinct prompts (a prompt repeated
    for a group is prefilled once). Decode step t (context prompt_len + t) is bound
    by the larger of its bytes / bandwidth, bytes = the weights once + every row's K and V of all
    layers so far + every row's logits written and read once, and its FLOPs / peak, FLOPs =
    2 * params per row + attention's 4 * layers * heads * head_dim * context per row.
    Returns tok/s (new tokens of the batch / the bound's seconds) and the share of that time
    the weights, the KV cache and the logits take in the memory bound."""
    params = weight_bytes / 2                                           # bf16 weights
    kv_per_token = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * kv_bytes
    seconds = 2 * params * (batch // group) * prompt_len / peak_flops   # prefill
    parts = {"weights": 0.0, "kv": 0.0, "logits": 0.0}
    for t in range(new_tokens):
        context = prompt_len + t
        step = {"weights": weight_bytes, "kv": batch * context * kv_per_token,
                "logits": batch * cfg.vocab_size * logit_bytes * 2}
        flops = batch * (2 * params + 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context)
        seconds += max(sum(step.values()) / bandwidth, flops / peak_flops)
        for k, v in step.items():
            parts[k] += v
    total = sum(parts.values())
    return {"tok_s": batch * new_tokens / seconds,
            **{f"{k}_share": round(v / total, 3) for k, v in parts.items()}}


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), PEAK_BF16_FLOPS["H100"])


def fixed_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (batch, length), generator=g).tolist()


def measured(fn) -> tuple[float, float]:
    """(seconds, GiB allocated at peak above the start) of fn() -> seconds."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds = fn()
    return seconds, (torch.cuda.max_memory_allocated() - base) / GiB


def run_ours(ours, prompts, case: dict, repeats: int, cuda_graphs: bool, profile_title: str | None = None) -> dict:
    """Warm-up (fresh decoder: its memory and setup time) then the median of `repeats` timed calls,
    then (with profile_title) one more call under torch.profiler, its kernels printed.
    A failed graph capture is reported and the kernels are measured without it."""
    kw = dict(temperature=case["temperature"], seed=0, cuda_graphs=cuda_graphs)
    fast_decode.release(ours)
    torch.cuda.empty_cache()
    rec = {}
    try:
        first_s, mem = measured(lambda: time_ours(ours, prompts, case["new_tokens"], **kw))
    except RuntimeError:
        if not cuda_graphs:
            raise
        traceback.print_exc()
        rec["graph_error"] = traceback.format_exc(limit=1).strip().splitlines()[-1]
        kw["cuda_graphs"] = False
        fast_decode.release(ours)
        first_s, mem = measured(lambda: time_ours(ours, prompts, case["new_tokens"], **kw))
    seconds = statistics.median(time_ours(ours, prompts, case["new_tokens"], **kw) for _ in range(repeats))
    if profile_title:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            time_ours(ours, prompts, case["new_tokens"], **kw)
        print_kernel_profile(profile_title, prof, cuda=True)
    return {**rec, "cuda_graphs": kw["cuda_graphs"], "first_call_s": round(first_s, 3), "mem_gib": round(mem, 3),
            "tok_s": len(prompts) * case["new_tokens"] / seconds}


def run_hf(hf, prompts, case: dict, repeats: int) -> dict:
    time_hf(hf, prompts, case["new_tokens"], torch.device("cuda"), case["temperature"])   # full-length warm-up
    runs = [measured(lambda: time_hf(hf, prompts, case["new_tokens"], torch.device("cuda"), case["temperature"]))
            for _ in range(repeats)]
    return {"tok_s": len(prompts) * case["new_tokens"] / statistics.median(s for s, _ in runs),
            "mem_gib": round(max(m for _, m in runs), 3)}


def hf_compiled(name: str, kind: str, repeats: int, budget_s: float) -> dict:
    """A compiled transformers reference (kind "generate" or "loop") in a child process killed
    after budget_s."""
    cmd = [sys.executable, "-m", "bench.fast_generate", "--hf-compiled-child", name, "--child-kind", kind,
           "--hf-repeats", str(repeats)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)     # its own group: compile workers die with it
    try:
        out, err = proc.communicate(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"na": f"did not finish within the {budget_s:.0f} s budget (compile included)"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return {"na": f"failed (exit {proc.returncode}): {last[:200]}"}
    return json.loads(lines[-1])


def greedy_loop(hf, cache, compile_step=None):
    """gpt-fast's decoding over transformers' model: one static KV cache (`cache`, reset and reused
    by every call, so the step's graph sees the same buffers), the prompt's forward, then one
    compiled one-token step per new token (argmax inside the graph) with the position a device
    tensor advanced in place (no host-to-device copy, hence no wait, between steps), no `generate`.
    compile_step defaults to torch.compile(mode="reduce-overhead", fullgraph=True).
    Returns run(prompt [1, P], new_tokens) -> the new tokens [1, new_tokens]."""
    compile_step = compile_step or (lambda f: torch.compile(f, mode="reduce-overhead", fullgraph=True))

    @compile_step
    def step(token, position):                                  # token [1, 1], position [1]
        logits = hf(input_ids=token, position_ids=position[None], cache_position=position,
                    past_key_values=cache, use_cache=True).logits
        return logits[:, -1].argmax(-1, keepdim=True)           # [1, 1]

    def run(prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
        cache.reset()
        with torch.no_grad():
            positions = torch.arange(prompt.shape[1], device=prompt.device)
            logits = hf(input_ids=prompt, position_ids=positions[None], cache_position=positions,
                        past_key_values=cache, use_cache=True).logits
            tokens = [logits[:, -1].argmax(-1, keepdim=True)]
            position = positions[-1:] + 1
            for _ in range(new_tokens - 1):
                tokens.append(step(tokens[-1], position).clone())   # clone: the graph reuses its output
                position += 1
        return torch.cat(tokens, dim=1)
    return run


def hf_compiled_child(name: str, kind: str, repeats: int) -> None:
    case = CASES["latency"]
    hf = cuda_hf(name)
    prompts = fixed_prompts(case["batch"], case["prompt_len"], hf.config.vocab_size)
    if kind == "generate":
        # A static cache makes `generate` compile the decoding forward itself (generation_config's
        # CompileConfig: fullgraph, mode reduce-overhead). Compiling `forward` here as well wrapped
        # it twice, and that run died in inductor's cudagraph code (exit -11) on an H100.
        hf.generation_config.cache_implementation = "static"
        run = lambda: time_hf(hf, prompts, case["new_tokens"], torch.device("cuda"))   # noqa: E731
    else:
        from transformers import StaticCache
        prompt = torch.tensor(prompts, device="cuda")
        cache = StaticCache(config=hf.config, max_cache_len=prompt.shape[1] + case["new_tokens"])
        loop = greedy_loop(hf, cache)

        def run() -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loop(prompt, case["new_tokens"])
            torch.cuda.synchronize()
            return time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(2):      # compiles (prefill and decode shapes), then records the CUDA graphs
        run()
    warm_s = time.perf_counter() - t0
    seconds = statistics.median(run() for _ in range(repeats))
    print(json.dumps({"tok_s": case["new_tokens"] / seconds, "warmup_s": round(warm_s, 1)}))


def bench_shape(name: str, args, bandwidth: float, rows: list[dict]) -> None:
    import transformers
    hf, ours = cuda_pair(name)
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    for case_name in args.cases:
        case = CASES[case_name]
        group = case.get("group", 1)                  # completions per distinct prompt
        prompts = [p for p in fixed_prompts(case["batch"] // group, case["prompt_len"], ours.cfg.vocab_size)
                   for _ in range(group)]
        o = run_ours(ours, prompts, case, args.repeats, not args.no_cuda_graphs,
                     f"{name} {case_name}: one call of ours" if args.profile else None)
        rec = {"model": name, "case": case_name, **case, "dtype": "bfloat16",
               "transformers": transformers.__version__, "torch": torch.__version__,
               "ours_tok_s": round(o["tok_s"], 1), "pdl": use_pdl(torch.device("cuda")),
               "layer_kernel": layer_kernel_mode(case["batch"]),
               "layer_config": os.environ.get("DEEPRETRIEVAL_LAYER_CONFIG") or None, "ours_mem_gib": o["mem_gib"],
               "weights_gib": round(weight_bytes / GiB, 3),
               **{k: o[k] for k in ("cuda_graphs", "first_call_s", "graph_error") if k in o}}
        if not args.ours_only:
            h = run_hf(hf, prompts, case, args.hf_repeats)
            rec.update(transformers_tok_s=round(h["tok_s"], 1), ratio=round(o["tok_s"] / h["tok_s"], 2),
                       transformers_mem_gib=h["mem_gib"])
        if case_name == "latency":
            roofline = bandwidth / weight_bytes
            rec.update(hbm_tb_s=round(bandwidth / 1e12, 3), roofline_tok_s=round(roofline, 1),
                       roofline_fraction=round(o["tok_s"] / roofline, 3))
        else:
            roof = rollout_roofline(ours.cfg, weight_bytes, case["batch"], case["prompt_len"],
                                    case["new_tokens"], bandwidth, peak_flops(), group=group)
            rec.update(hbm_tb_s=round(bandwidth / 1e12, 3), roofline_tok_s=round(roof["tok_s"], 1),
                       roofline_fraction=round(o["tok_s"] / roof["tok_s"], 3),
                       **{k: v for k, v in roof.items() if k.endswith("_share")})
        rows.append(rec)
    del hf, ours
    torch.cuda.empty_cache()
    latency = next((r for r in rows if r["model"] == name and r["case"] == "latency"), None)
    if latency is not None and not args.ours_only:
        for kind, key in (("generate", "transformers_compiled"), ("loop", "compiled_loop")):
            if args.skip_compiled:
                c = {"na": "skipped (--skip-compiled)"}
            else:
                c = hf_compiled(name, kind, args.hf_repeats, args.compiled_budget_s)
            if "na" in c:
                latency[key] = "n/a: " + c["na"]
            else:
                latency.update({f"{key}_tok_s": round(c["tok_s"], 1), f"{key}_warmup_s": c["warmup_s"],
                                f"ratio_{key}": round(latency["ours_tok_s"] / c["tok_s"], 2)})
    for r in rows:
        if r["model"] == name:
            append_result("fast_generate", r)


def markdown(rows: list[dict]) -> str:
    head = ("| model | case | ours tok/s | transformers tok/s | ratio | static cache + compiled generate "
            "tok/s | ratio | compiled greedy loop tok/s | ratio | HBM roofline | ours mem GiB | transformers mem GiB |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        compiled = r.get("transformers_compiled_tok_s", r.get("transformers_compiled", ""))
        loop = r.get("compiled_loop_tok_s", r.get("compiled_loop", ""))
        roof = f"{100 * r['roofline_fraction']:.0f} % of {r['roofline_tok_s']:.0f}" if "roofline_fraction" in r else ""
        hf = (f"{r['transformers_tok_s']:.0f} | {r['ratio']:.1f}x" if "ratio" in r else "- | -")
        hf_mem = f"{r['transformers_mem_gib']:.2f}" if "transformers_mem_gib" in r else "-"
        lines.append(f"| {r['model']} | {r['case']} b{r['batch']} p{r['prompt_len']} n{r['new_tokens']} "
                     f"T{r['temperature']:g} | {r['ours_tok_s']:.0f} | {hf} | {compiled} | "
                     f"{r.get('ratio_transformers_compiled', '')} | {loop} | {r.get('ratio_compiled_loop', '')} | "
                     f"{roof} | {r['ours_mem_gib']:.2f} | {hf_mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(QWEN25_SHAPES), choices=list(QWEN25_SHAPES))
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours (median kept)")
    parser.add_argument("--hf-repeats", type=int, default=3, help="timed calls of each reference (median kept)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="our kernels without graph capture")
    parser.add_argument("--no-pdl", action="store_true",
                        help="launch our kernels without programmatic dependent launch (sets DEEPRETRIEVAL_PDL=0)")
    parser.add_argument("--skip-compiled", action="store_true", help="skip both compiled transformers references")
    parser.add_argument("--ours-only", action="store_true",
                        help="time ours alone (no transformers, no ratio): to compare our own settings, "
                             "e.g. --no-pdl against the default")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, profile one more call of ours per case: GPU time by kernel")
    parser.add_argument("--compiled-budget-s", type=float, default=100.0,
                        help="wall-clock budget of each compiled-transformers child (compile included)")
    parser.add_argument("--hf-compiled-child", help=argparse.SUPPRESS)
    parser.add_argument("--child-kind", choices=("generate", "loop"), default="generate", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.no_pdl:
        os.environ["DEEPRETRIEVAL_PDL"] = "0"
    if not torch.cuda.is_available():
        raise SystemExit("bench.fast_generate needs a CUDA GPU; none is available")
    if args.hf_compiled_child:
        hf_compiled_child(args.hf_compiled_child, args.child_kind, args.hf_repeats)
        return
    start = time.perf_counter()
    bandwidth = hbm_bandwidth()
    print(f"HBM copy bandwidth: {bandwidth / 1e12:.2f} TB/s on {torch.cuda.get_device_name(0)}")
    rows: list[dict] = []
    for name in args.shapes:
        bench_shape(name, args, bandwidth, rows)
    print(f"\n{torch.cuda.get_device_name(0)}, HBM copy {bandwidth / 1e12:.2f} TB/s, "
          f"PDL {'on' if use_pdl(torch.device('cuda')) else 'off'}, "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

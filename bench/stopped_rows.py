"""Rollouts whose rows stop at their own lengths, as RL's do: stopped rows leaving the batch at
each check (`SamplingParams.compact`, the default) against the same sampler keeping them to the
end (`compact=False`) and transformers' `generate` (which keeps them too), same run.

    python -m bench.stopped_rows                                 # CPU: 32 rows
    python -m bench.stopped_rows --device cuda --claims 32       # GPU: a GRPO step's 256 rows

The model is the built-in SmolLM2-135M-Instruct (the only real weights offline: a random model
does not stop the way a trained one does); the prompts are SciFact training claims in the demo's
literature-search prompt; up to `--new-tokens` tokens (96, configs/literature_scifact_smollm2.toml)
and the tokenizer's stop tokens. Two cases with the same number of rows:
  rollout  temperature 1, `--claims` claims each repeated `--group` times (a GRPO step)
  eval     greedy over claims x group distinct claims (what evaluation decodes)
`compact` and `keep` decode the same tokens (each row draws the noise it draws in the whole batch),
up to the rounding of smaller batches; on CPU both also sample exactly transformers' tokens (Exp(1)
noise from the same seed, argmax p / noise: how torch.multinomial draws one sample). The line
counts the rows that agree.
Each variant runs once untimed, then `--repeats` times alternating with the others, same seed;
the median is kept. Useful tok/s = tokens up to and including each row's stop token / wall time.
Appends one JSON line per case to bench/results/stopped_rows.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from bench.generate import smollm2_pair
from bench.results_log import append_result
from deepretrieval.commands.demo import demo_config_path
from deepretrieval.evaluation import encode_prompts
from deepretrieval.model.sampler import SamplingParams, generate, left_pad
from deepretrieval.run_config import load_config
from deepretrieval.tasks.registry import build_task


def claim_prompts(claims: int, tokenizer) -> list[list[int]]:
    """Token ids of the first `claims` training prompts of the demo's task."""
    task = build_task(load_config(demo_config_path()).task)
    try:
        return encode_prompts(task.prompts("train")[:claims], tokenizer, max_prompt_tokens=1024)
    finally:
        task.close()


def useful_tokens(rows: list[list[int]], stops: set[int]) -> list[list[int]]:
    """Each row up to and including its first stop token (transformers pads after it)."""
    return [r[:next((k + 1 for k, t in enumerate(r) if t in stops), len(r))] for r in rows]


def run_hf(hf, prompts, params: SamplingParams, seed: int) -> list[list[int]]:
    ids, mask = left_pad(prompts, 0, hf.device)                                  # [B, P] each
    P = ids.shape[1]
    torch.manual_seed(seed)
    sampling = (dict(do_sample=True, temperature=params.temperature, top_k=0, top_p=1.0) if params.temperature
                else dict(do_sample=False))
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, pad_token_id=0,
                          max_new_tokens=params.max_new_tokens, eos_token_id=list(params.stop_token_ids), **sampling)
    return useful_tokens(out[:, P:].tolist(), set(params.stop_token_ids))


def timed(fn) -> tuple[float, list[list[int]]]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, rows


def bench_case(case: str, ours, hf, prompts, stops, temperature: float, args) -> dict:
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=temperature, stop_token_ids=stops)
    variants = {
        "compact": lambda: generate(ours, prompts, params, pad_token_id=0, seed=0).token_lists(),
        "keep": lambda: generate(ours, prompts, dataclasses.replace(params, compact=False), pad_token_id=0,
                                 seed=0).token_lists(),
        "transformers": lambda: run_hf(hf, prompts, params, seed=0),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    rows: dict[str, list[list[int]]] = {}
    for name, fn in variants.items():
        fn()                                                     # untimed: kernels, graphs, allocator
    for _ in range(args.repeats):
        for name, fn in variants.items():
            s, rows[name] = timed(fn)
            seconds[name].append(s)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    tokens = {name: sum(map(len, r)) for name, r in rows.items()}
    tok_s = {name: tokens[name] / median[name] for name in variants}
    lengths = [len(r) for r in rows["compact"]]
    agree = {f"rows_{a}_equal_{b}": sum(x == y for x, y in zip(rows[a], rows[b]))
             for a, b in (("keep", "transformers"), ("compact", "keep"))}
    record = {"case": case, "device": str(ours.device), "dtype": str(ours.dtype).removeprefix("torch."),
              "rows": len(prompts), "group": args.group, "new_tokens": args.new_tokens, "temperature": temperature,
              "repeats": args.repeats, "threads": torch.get_num_threads(),
              "length_mean": round(statistics.mean(lengths), 1), "length_max": max(lengths),
              **{f"{name}_s": round(median[name], 3) for name in variants},
              **{f"{name}_tokens": tokens[name] for name in variants},
              **{f"{name}_tok_s": round(tok_s[name], 1) for name in variants},
              "compact_vs_keep": round(tok_s["compact"] / tok_s["keep"], 3),
              "compact_vs_transformers": round(tok_s["compact"] / tok_s["transformers"], 3),
              **agree}
    print(f"{case}, T={temperature}: {len(prompts)} rows, "
          f"length mean {record['length_mean']} max {record['length_max']} | "
          + " | ".join(f"{name} {tok_s[name]:,.0f} tok/s ({median[name]:.2f} s, {tokens[name]} tokens)"
                       for name in variants)
          + f" | compact/keep {record['compact_vs_keep']:.2f}x, compact/transformers "
            f"{record['compact_vs_transformers']:.2f}x | rows equal: keep-transformers "
            f"{agree['rows_keep_equal_transformers']}/{len(prompts)}, compact-keep {agree['rows_compact_equal_keep']}")
    append_result("stopped_rows", record)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="*", default=["rollout", "eval"], choices=["rollout", "eval"])
    parser.add_argument("--claims", type=int, default=4, help="distinct prompts of the rollout")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt in the rollout")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    ours, tokenizer, hf = smollm2_pair(dtype, args.device)
    rows = args.claims * args.group
    claims = claim_prompts(rows, tokenizer)
    stops = tuple(tokenizer.stop_token_ids)
    for case in args.cases:
        if case == "rollout":
            bench_case(case, ours, hf, [p for p in claims[:args.claims] for _ in range(args.group)], stops, 1.0, args)
        else:
            bench_case(case, ours, hf, claims, stops, 0.0, args)


if __name__ == "__main__":
    main()

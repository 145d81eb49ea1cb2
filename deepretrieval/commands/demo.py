"""`deepretrieval demo`: offline, CPU-sized: SmolLM2-135M-Instruct learns by GRPO to rewrite
SciFact claims for BM25, evaluated before and after.

    deepretrieval demo                                  # defaults: <= 10 minutes on 2 CPU cores
    deepretrieval demo --steps 20 --device cuda         # longer, on a GPU
    deepretrieval demo --steps 1 --eval-limit 4 rl.sampling.max_new_tokens=16   # a smoke run

What it does, with the settings of deepretrieval/demo.toml (overridable as KEY=VALUE):
1. unpacks the SciFact copy that ships with the package (no network, no ../shared) and builds a
   BM25 index (k1 0.9, b 0.4) over its 5,183 abstracts;
2. evaluates, on the first `run.eval_limit` test claims, the raw claim as the query and the
   model's zero-shot rewrite (greedy), NDCG@10;
3. trains with GRPO on the 809 training claims for `--steps` steps (tqdm bars);
4. evaluates the trained policy the same way and writes <out>/report.md (table, curves
   reward.png / kl.png / length.png, example completions), beside everything `train` writes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from importlib import resources
from pathlib import Path

METRIC = "ndcg@10"


def demo_config_path() -> Path:
    return Path(str(resources.files("deepretrieval") / "demo.toml"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="GRPO steps (default: demo.toml's rl.total_steps)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N test claims")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (all threads)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(args: argparse.Namespace) -> int:
    from deepretrieval.report import describe_run, experiment_report, plot_curves, summary
    from deepretrieval.run_config import ConfigError, load_config
    from deepretrieval.training import train_run
    from deepretrieval.model.registry import resolve_device
    t0, c0 = time.perf_counter(), cpu_seconds()
    extra = [f"run.out_dir={json.dumps(args.out)}", f"model.device={args.device}"]
    extra += [f"rl.total_steps={args.steps}"] if args.steps is not None else []
    extra += [f"run.eval_limit={args.eval_limit}"] if args.eval_limit is not None else []
    try:
        cfg = load_config(demo_config_path(), list(args.overrides) + extra)
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from exc
    result = train_run(cfg, args.out)
    curves = plot_curves(args.out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    setup = describe_run(cfg, result, "BEIR SciFact as shipped with the package (tasks/data/scifact)")
    timing = (f"time: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU over {os.cpu_count()} cores "
              f"(device: {resolve_device(cfg.model.device)})")
    command = " ".join(["deepretrieval demo", f"--device {args.device}", f"--out {args.out}",
                        *([f"--steps {args.steps}"] if args.steps is not None else []),
                        *([f"--eval-limit {args.eval_limit}"] if args.eval_limit is not None else []),
                        *args.overrides])
    report = experiment_report("DeepRetrieval demo: SmolLM2-135M rewrites SciFact claims for BM25",
                               command, setup, result.before, result.after, METRIC, result.steps, curves,
                               timing)
    out = Path(args.out) / "report.md"
    out.write_text(report)
    numbers = {**summary(result.before, result.after, METRIC, result.steps), "wall_s": round(wall, 1),
               "cpu_s": round(cpu, 1), "report": str(out)}
    if args.json:
        print(json.dumps(numbers))
    else:
        print(report)
        print(f"report written to {out}")
    return 0

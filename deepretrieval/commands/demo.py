"""`deepretrieval demo`: offline, CPU-sized: SmolLM2-135M-Instruct learns by GRPO to write
PubMed-style queries for SciFact's claims, evaluated before and after.

    deepretrieval demo                                  # defaults: <= 10 minutes on 2 CPU cores
    deepretrieval demo --steps 30 --device cuda         # longer, on a GPU
    deepretrieval demo --steps 1 --eval-limit 4 rl.sampling.max_new_tokens=16   # a smoke run

What it does, with the settings of deepretrieval/demo.toml (overridable as KEY=VALUE):
1. unpacks the SciFact copy that ships with the package (no network) and puts its 5,183 abstracts
   behind the offline PubMed-syntax backend (Boolean match, BM25 order), where the raw claim
   ANDs every word and finds almost nothing;
2. evaluates, on the first `run.eval_limit` test claims, the raw claim as the query and the
   model's zero-shot query (greedy), Recall@100;
3. trains with GRPO on the training claims for `--steps` steps (tqdm bars), rewarded with the
   paper's recall tiers;
4. evaluates the trained policy the same way and writes <out>/report.md: the evaluation table,
   the training progress (mean reward and valid-format rate over the first / middle / last third
   of the steps) with one sentence saying whether they rose, the curves reward.png /
   valid_format.png / kl.png / length.png, and example completions, beside everything `train`
   writes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from importlib import resources
from pathlib import Path

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
    from deepretrieval.report import describe_run, experiment_report, plot_curves, summary, training_progress
    from deepretrieval.cli import device_or_exit
    from deepretrieval.rl.checkpoint import CheckpointError
    from deepretrieval.rl.run_logging import METRICS, read_jsonl
    from deepretrieval.run_config import ConfigError, load_config
    from deepretrieval.training import train_run
    from deepretrieval.model.registry import resolve_device
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: the demo trains for at least 1 step")
    t0, c0 = time.perf_counter(), cpu_seconds()
    extra = [f"run.out_dir={json.dumps(args.out)}", f"model.device={args.device}"]
    extra += [f"rl.total_steps={args.steps}"] if args.steps is not None else []
    extra += [f"run.eval_limit={args.eval_limit}"] if args.eval_limit is not None else []
    try:
        cfg = load_config(demo_config_path(), list(args.overrides) + extra)
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from exc
    device_or_exit(cfg.model.device, "--device")
    try:
        result = train_run(cfg, args.out)
    except CheckpointError as exc:              # e.g. --out holds an earlier run
        raise SystemExit(str(exc)) from exc
    curves = plot_curves(args.out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    metric = result.metric
    setup = describe_run(cfg, result, "BEIR SciFact as shipped with the package (tasks/data/scifact)")
    timing = (f"time: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU over {os.cpu_count()} cores "
              f"(device: {resolve_device(cfg.model.device)})")
    command = " ".join(["deepretrieval demo", f"--device {args.device}", f"--out {args.out}",
                        *([f"--steps {args.steps}"] if args.steps is not None else []),
                        *([f"--eval-limit {args.eval_limit}"] if args.eval_limit is not None else []),
                        *args.overrides])
    metrics_rows = read_jsonl(Path(args.out) / METRICS)
    report = experiment_report("DeepRetrieval demo: SmolLM2-135M learns PubMed-style queries for SciFact",
                               command, setup, result.before, result.after, metric, result.steps, curves,
                               timing, metrics_rows)
    out = Path(args.out) / "report.md"
    out.write_text(report)
    numbers = {**summary(result.before, result.after, metric, result.steps),
               "learned": training_progress(metrics_rows)[1], "wall_s": round(wall, 1),
               "cpu_s": round(cpu, 1), "report": str(out)}
    if args.json:
        print(json.dumps(numbers))
    else:
        print(report)
        print(f"report written to {out}")
    return 0

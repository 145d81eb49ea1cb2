"""`deepretrieval eval`: the task's metric on its eval split for the raw query and the model's rewrite.

    deepretrieval eval --config configs/demo.toml                         # raw + the base model
    deepretrieval eval --config configs/demo.toml --checkpoint runs/demo --limit 50 --json
    deepretrieval eval --config FILE --raw-only                           # no model at all

--checkpoint takes a run directory (its newest checkpoint), one checkpoint folder, a HF folder
(e.g. runs/demo/export) or a built-in model name; without it the config's base model rewrites.
Variants (deepretrieval/evaluation.py): raw, rewrite, rewrite_or_raw (labelled fallback).
With --json: one JSON object per variant, one per line. On CPU a note (stderr) first says how
much the evaluation generates and how to make it smaller.
"""
from __future__ import annotations

import argparse
import sys

from .train import add_config_arguments, cpu_eval_notice, load_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", help="run dir, checkpoint dir, HF folder or built-in model name")
    parser.add_argument("--split", help="split to evaluate (default: the config's run.eval_split)")
    parser.add_argument("--limit", type=int, help="first N examples of the split (default: run.eval_limit)")
    parser.add_argument("--raw-only", action="store_true", help="only the raw-query baseline")
    parser.add_argument("--json", action="store_true", help="one JSON object per variant, one per line")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.evaluation import evaluate_variants
    from deepretrieval.policy import load_policy
    from deepretrieval.report import print_rows
    from deepretrieval.training import build_eval_task, rewrite_settings
    from deepretrieval.model.registry import resolve_device
    extra = [f"run.eval_split={args.split}"] if args.split else []
    extra += [f"run.eval_limit={args.limit}"] if args.limit is not None else []
    cfg = load_run_config(args, extra)
    task = build_eval_task(cfg)
    model = tokenizer = None
    if not args.raw_only:
        notice = cpu_eval_notice(cfg, len(task.prompts(cfg.run.eval_split)))
        if notice:
            print(notice, file=sys.stderr)
        model, tokenizer = load_policy(args.checkpoint or cfg.model.name,
                                       resolve_device(cfg.model.device), cfg.model.chat_template)
    rows = evaluate_variants(task, cfg.run.eval_split, model, tokenizer, rewrite_settings(cfg))
    for row in rows:
        row["model"] = None if args.raw_only else (args.checkpoint or cfg.model.name)
    print_rows(rows, args.json)
    task.close()
    return 0

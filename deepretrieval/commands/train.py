"""`deepretrieval train`: RL training from a TOML config plus dotted overrides.

    deepretrieval train --config configs/scifact_bm25_grpo.toml rl.total_steps=10 task.data=DIR
    deepretrieval train --config configs/demo.toml --run-dir runs/try --resume
    torchrun --nproc_per_node=2 -m deepretrieval train --config FILE [overrides]   # same arguments

Everything goes to the run directory (`run.out_dir`, or --run-dir): run_config.json (the resolved
config), eval.jsonl, metrics.jsonl, rollouts.jsonl, curves.png, checkpoints/, export/ (HF format).
--resume continues from the newest checkpoint there, exactly (model, optimiser, RNG, data cursor).
"""
from __future__ import annotations

import argparse
import json


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment TOML (configs/*.toml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. rl.total_steps=10 task.limit=64")


def load_run_config(args: argparse.Namespace, extra: list[str] = ()):
    from deepretrieval.run_config import ConfigError, load_config
    try:
        return load_config(args.config, list(args.overrides) + list(extra))
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", help="output folder (default: the config's run.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--json", action="store_true",
                        help="print the evaluation rows as JSON lines (one per variant and evaluation)")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.report import print_rows
    from deepretrieval.training import train_run
    cfg = load_run_config(args, [f"run.out_dir={json.dumps(args.run_dir)}"] if args.run_dir else [])
    result = train_run(cfg, cfg.run.out_dir, resume=args.resume)
    if result.after:                      # rank 0
        for label, rows in (("before", result.before), ("after", result.after)):
            print_rows(rows, args.json, label)
        if not args.json:
            print(f"run written to {result.run_dir}")
    return 0

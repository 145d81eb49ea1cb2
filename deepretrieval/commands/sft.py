"""`deepretrieval sft`: supervised fine-tuning on chat traces, the cold start before RL.

    deepretrieval sft --config configs/spider.toml --data traces.jsonl --run-dir runs/sft
    deepretrieval sft --config FILE --data traces.jsonl sft.epochs=3 sft.lora.rank=16    # overrides
    torchrun --nproc_per_node=2 -m deepretrieval sft --config FILE --data traces.jsonl   # same arguments
    deepretrieval train --config configs/spider.toml model.name=runs/sft/export         # then RL

Each line of --data is {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
ending with the assistant's answer; the loss covers that answer only (rl/sft.py). Settings are
the config's [sft] table (rl.config.SFTConfig) and [model] (the base model, chat template,
device). The run directory gets what an RL run's has: run_config.json, config.json, metrics.jsonl,
curves.png, checkpoints/ and export/ (HF format with the tokenizer, LoRA merged), so
`deepretrieval eval --checkpoint RUN_DIR`, `export --checkpoint RUN_DIR` and `--resume` work on it,
and `model.name=RUN_DIR/export` starts RL from the fine-tuned weights.
"""
from __future__ import annotations

import argparse
import json

from .train import add_config_arguments, load_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, help='traces, JSON lines of {"messages": [...]}')
    parser.add_argument("--run-dir", help="output folder (default: the config's run.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.training import sft_run
    cfg = load_run_config(args, [f"run.out_dir={json.dumps(args.run_dir)}"] if args.run_dir else [])
    summary = sft_run(cfg, args.data, resume=args.resume)
    if "steps" in summary:                                   # rank 0
        print(json.dumps(summary) if args.json else
              f"SFT on {summary['traces']} traces, {summary['steps']} steps: answer-token loss "
              f"{summary['loss_first']:.3f} -> {summary['loss_last']:.3f}\n"
              f"export: {summary['export']}  (RL from it: deepretrieval train --config {args.config} "
              f"model.name={summary['export']})")
    return 0

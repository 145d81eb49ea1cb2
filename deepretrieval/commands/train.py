"""`deepretrieval train`: RL training from a TOML config plus dotted overrides.

    deepretrieval train --config configs/scifact_bm25_grpo.toml rl.total_steps=10 task.data=DIR
    deepretrieval train --config configs/demo.toml --run-dir runs/try --resume
    torchrun --nproc_per_node=2 -m deepretrieval train --config FILE [overrides]   # same arguments

Everything goes to the run directory (`run.out_dir`, or --run-dir): run_config.json (the resolved
config), eval.jsonl, metrics.jsonl, rollouts.jsonl, curves.png, checkpoints/, export/ (HF format).
--resume continues from the newest checkpoint there, exactly (model, optimiser, RNG, data cursor);
without --resume the run directory must hold no checkpoint (a new run never mixes with an old one).
The evaluation before training is not redone on resume: when the settings it depends on
(`EVAL_SETTINGS`) differ from the previous run's run_config.json, a note after the rows names them.
On CPU a note at start says how much each evaluation generates (it can take many minutes at a
config's GPU sizes) and how to make it smaller.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deepretrieval.cli import device_or_exit

# The settings the evaluation rows depend on: a dotted config key, or a table's prefix ending in ".".
EVAL_SETTINGS = ("model.", "task.", "run.eval_split", "run.eval_limit", "run.eval_max_new_tokens",
                 "run.eval_greedy", "run.eval_batch_size", "rl.seed", "rl.sampling.temperature")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment TOML (configs/*.toml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. rl.total_steps=10 task.limit=64")


def load_run_config(args: argparse.Namespace, extra: list[str] = ()):
    """The RunConfig of --config + overrides; a config error or a bad model.device is one line."""
    from deepretrieval.run_config import ConfigError, load_config
    try:
        cfg = load_config(args.config, list(args.overrides) + list(extra))
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from exc
    device_or_exit(cfg.model.device, "model.device")     # now, not after minutes of loading
    return cfg


def cpu_eval_notice(cfg, prompts: int | None = None) -> str | None:
    """On CPU, one line: how much an evaluation generates and how to make it smaller (None on a
    GPU). `prompts`: the number of evaluation prompts when known."""
    if device_or_exit(cfg.model.device, "model.device").type != "cpu":
        return None
    split, limit = cfg.run.eval_split, cfg.run.eval_limit
    which = (f"{prompts} {split} prompt(s)" if prompts is not None else
             f"the first {limit} {split} prompt(s)" if limit else f"every {split} prompt")
    return (f"note: on CPU each evaluation generates up to {cfg.run.eval_max_new_tokens} new tokens for "
            f"each of {which}, which can take many minutes; run.eval_limit=N "
            f"run.eval_max_new_tokens=M make it smaller")


def _flat(data: dict, prefix: str = "") -> dict:
    """{"run": {"eval_limit": 8}} -> {"run.eval_limit": 8}."""
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def changed_eval_settings(run_dir: Path, cfg) -> list[str]:
    """'key: old -> new' for each evaluation setting in which `cfg` differs from the run
    directory's run_config.json (the previous run's, read before this run overwrites it)."""
    from deepretrieval.policy import RUN_CONFIG
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        return []
    old = _flat(json.loads(path.read_text()))
    new = _flat(json.loads(json.dumps(cfg.to_dict())))       # tuples as JSON lists, like the file
    keys = [k for k in sorted(old.keys() | new.keys()) if k.startswith(EVAL_SETTINGS)]
    return [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", help="output folder (default: the config's run.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--json", action="store_true",
                        help="print the evaluation rows as JSON lines (one per variant and evaluation)")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.report import print_rows
    from deepretrieval.rl.checkpoint import CheckpointError
    from deepretrieval.training import train_run
    cfg = load_run_config(args, [f"run.out_dir={json.dumps(args.run_dir)}"] if args.run_dir else [])
    run_dir = Path(cfg.run.out_dir)
    changed = changed_eval_settings(run_dir, cfg) if args.resume else []
    notice = cpu_eval_notice(cfg)
    if notice and int(os.environ.get("RANK", "0")) == 0:
        print(notice, file=sys.stderr)
    try:
        result = train_run(cfg, run_dir, resume=args.resume)
    except CheckpointError as exc:          # e.g. a damaged checkpoint: the message says what to do
        raise SystemExit(str(exc)) from exc
    if result.after:                      # rank 0
        for label, rows in (("before", result.before), ("after", result.after)):
            print_rows(rows, args.json, label)
        if changed:
            print("note: the 'before' rows were evaluated by an earlier run in this directory, with "
                  "other settings: " + "; ".join(changed), file=sys.stderr if args.json else sys.stdout)
        if not args.json:
            print(f"run written to {result.run_dir}")
    return 0

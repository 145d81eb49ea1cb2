"""Chat traces for a supervised cold start (`deepretrieval sft`) from a config's training split:
each prompt answered in the task's format with the example's own target (deepretrieval/cold_start.py:
the gold SQL for text-to-SQL, the user's text for query tasks; --kind best_edit: the best single-word
edit of the user's text by the reward).

    python scripts/format_traces.py --config configs/spider_crossdb_smollm2.toml --out runs/traces.jsonl
    deepretrieval sft --config configs/spider_crossdb_smollm2.toml --data runs/traces.jsonl --run-dir runs/sft
    python -m bench.rl_gain --config configs/spider_crossdb_smollm2.toml --cold-start gold   # both, then RL
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.cold_start import KINDS, write_traces
from deepretrieval.run_config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--kind", choices=KINDS, default="gold", help="the answers (deepretrieval/cold_start.py)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        n = write_traces(load_config(args.config, args.overrides), args.out, args.kind)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    print(f"{n} traces -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Chat traces for a supervised cold start (`deepretrieval sft`) from a config's training split:
each prompt answered in the task's format with the example's own target — the user's text as the
query for query tasks (the format alone is taught; RL must then improve the query), the gold SQL
for text-to-SQL (the paper's cold start).

    python scripts/format_traces.py --config configs/scifact_smollm2_gpu.toml --out runs/traces.jsonl
    deepretrieval sft --config configs/scifact_smollm2_gpu.toml --data runs/traces.jsonl --run-dir runs/sft
    python -m bench.rl_gain --config configs/scifact_smollm2_gpu.toml model.name=runs/sft/export
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepretrieval.run_config import load_config
from deepretrieval.tasks.registry import build_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    task = build_task(load_config(args.config, args.overrides).task)
    prompts = task.prompts("train")
    examples = task.split_examples("train")
    if any(p.messages is None for p in prompts):
        raise SystemExit("traces need chat prompts: set task.prompt_frame = \"chat\"")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for p, ex in zip(prompts, examples):
            answer = ex["gold_sql"] if task.answer_key == "sql" else ex["input"]
            content = p.assistant_prefix + task.well_formed(p, answer)
            f.write(json.dumps({"messages": [*p.messages, {"role": "assistant", "content": content}]}) + "\n")
    close = getattr(task, "close", None)
    if close is not None:
        close()
    print(f"{len(prompts)} traces -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

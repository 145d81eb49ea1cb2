"""The real result: SmolLM2-135M-Instruct trained with GRPO on SciFact against our BM25 for a fixed
wall-clock budget, then NDCG@10 on the 300 test claims for (a) the raw claim, (b) the zero-shot
rewrite, (c) the RL rewrite. Goal (issue 9): (c) >= (a) + 0.01 and (c) >= (b) + 0.10.

    python -m bench.scifact_rl --data /path/to/scifact                 # GPU: configs/scifact_smollm2_gpu.toml
    python -m bench.scifact_rl --data DIR --minutes 8 rl.prompts_per_step=64
    python -m bench.scifact_rl --data DIR --no-record --device cpu rl.max_minutes=0 rl.total_steps=1 \\
        rl.prompts_per_step=2 rl.mini_batch_prompts=2 rl.group_size=2 rl.sampling.max_new_tokens=8 \\
        run.eval_limit=2 run.eval_max_new_tokens=8 --out /tmp/scifact_rl      # a CPU smoke run

`--data` is a BEIR SciFact folder (corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv). Writes
the run to --out (report.md, eval.jsonl, metrics.jsonl, reward.png / kl.png / length.png,
checkpoints, export), copies the report and curves to bench/results/scifact_rl/, and appends one
JSON line to bench/results/scifact_rl.jsonl: the three scores, their differences against the
goals, valid-format rates, steps, minutes and the resolved config.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.results_log import RESULTS_DIR, append_result, device_name
from deepretrieval.report import describe_run, experiment_report, plot_curves, summary
from deepretrieval.run_config import load_config
from deepretrieval.training import train_run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scifact_smollm2_gpu.toml"
METRIC = "ndcg@10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="BEIR SciFact folder")
    parser.add_argument("--minutes", type=float, help="training wall-clock budget (default: the config's 8)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    parser.add_argument("--out", default="runs/scifact_smollm2_gpu", help="run folder")
    parser.add_argument("--config", default=str(CONFIG), help="experiment TOML")
    parser.add_argument("--no-record", action="store_true", help="do not write to bench/results/")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args()
    extra = [f"task.data={json.dumps(args.data)}", f"model.device={args.device}",
             f"run.out_dir={json.dumps(args.out)}"]
    extra += [f"rl.max_minutes={args.minutes}"] if args.minutes is not None else []
    cfg = load_config(args.config, list(args.overrides) + extra)
    t0 = time.perf_counter()
    result = train_run(cfg, args.out)
    wall = time.perf_counter() - t0
    curves = plot_curves(args.out)
    numbers = summary(result.before, result.after, METRIC, result.steps)
    raw, zero, rl = (numbers[k]["score"] for k in ("raw", "zero_shot", "rl"))
    goals = {"rl_minus_raw": rl - raw, "rl_minus_zero_shot": rl - zero,
             "met": rl >= raw + 0.01 and rl >= zero + 0.10}
    command = "python -m bench.scifact_rl " + " ".join(
        [f"--data {args.data}", f"--device {args.device}", f"--out {args.out}",
         *([f"--minutes {args.minutes}"] if args.minutes is not None else []), *args.overrides])
    timing = (f"time: {wall / 60:.1f} min in all on {device_name()} (training limit "
              f"{cfg.rl.max_minutes} min); RL - raw = {goals['rl_minus_raw']:+.4f}, RL - zero-shot = "
              f"{goals['rl_minus_zero_shot']:+.4f} (goal: >= +0.01 and >= +0.10: "
              f"{'met' if goals['met'] else 'not met'})")
    report = experiment_report("SciFact + BM25: SmolLM2-135M-Instruct trained with GRPO", command,
                               describe_run(cfg, result, f"BEIR SciFact ({args.data})"),
                               result.before, result.after, METRIC, result.steps, curves, timing)
    (Path(args.out) / "report.md").write_text(report)
    print(report)
    print(f"ratio RL / raw NDCG@10: {rl / raw:.3f}" if raw else "raw NDCG@10 is 0")
    if args.no_record:
        return
    folder = RESULTS_DIR / "scifact_rl"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(report)
    for png in curves:
        shutil.copy(png, folder / png.name)
    append_result("scifact_rl", {**numbers, "goals": goals, "wall_s": round(wall, 1),
                                 "train_prompts": result.train_prompts, "command": command,
                                 "config": cfg.to_dict()})


if __name__ == "__main__":
    main()

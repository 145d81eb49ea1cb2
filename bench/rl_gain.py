"""Does RL find better queries than the user's own? Train a recipe on its train split, then score the
raw input, the zero-shot model and the RL model on val (where recipes are chosen) and on test, with
paired bootstrap intervals of the differences.

    python -m bench.rl_gain --config configs/scifact_smollm2_gpu.toml --name scifact_rl
    python -m bench.rl_gain --config configs/literature_scifact_smollm2.toml --name literature_rl --minutes 12
    python -m bench.rl_gain --config configs/spider_crossdb_smollm2.toml --name sql_rl
    python -m bench.rl_gain --config configs/spider_crossdb_smollm2.toml --name sql_rl --cold-start gold
    python -m bench.rl_gain --config configs/scifact_smollm2_gpu.toml task.data=/my/beir/folder --name my_rl
    python -m bench.rl_gain --config FILE --no-record --device cpu --out /tmp/x rl.total_steps=1 ...  # smoke
    python -m bench.rl_gain ... --resume       # the same command after a kill: on from the checkpoints

The config's own settings are used with `run.eval_split = "val"`: training evaluates raw and
zero-shot on val before it starts and the RL model after it ends (the numbers to choose a recipe
by), and this script then evaluates raw, zero-shot and RL on test once. Every variant of a task is
scored by the task's headline metric (`task.headline`: NDCG@10, Recall@k, execution accuracy)
per example, and `rl_minus_raw_ci95` / `rl_minus_zero_shot_ci95` are 95 % paired bootstrap
intervals of the mean difference (retrieval/metrics.py). For literature search the OR-of-words
rule (every word of the input joined by OR) is scored beside them: the baseline a rule reaches.
For text-to-SQL there is no raw variant (a question is not SQL).

--cold-start first fine-tunes the model on answers to its train split (deepretrieval/cold_start.py,
the `[sft]` settings: the gold SQL for text-to-SQL, as in the paper's SQL recipe; `--cold-start
best_edit` for query tasks: the best single-word edit of each training query by the reward), then
trains RL from that. Zero-shot stays the base model; the fine-tuned model before RL is scored as `sft`, so
what RL adds on top of the cold start is shown apart.

Writes the run to --out (report.md with the tables, curves, eval.jsonl, metrics.jsonl, rollouts,
checkpoints, export), copies report, curves and metrics.jsonl to bench/results/rl_gain/<run folder name>/, and
appends one JSON line to bench/results/<name>.jsonl: the scores per split, the intervals, steps, minutes, device, the
command and the resolved config.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from bench.results_log import RESULTS_DIR, append_result, device_name
from deepretrieval.evaluation import evaluate_variants
from deepretrieval.policy import EXPORT, load_policy
from deepretrieval.report import by_variant, plot_curves
from deepretrieval.rl.run_logging import METRICS
from deepretrieval.retrieval.metrics import paired_bootstrap_ci
from deepretrieval.run_config import load_config
from deepretrieval.tasks.literature_search import or_of_words
from deepretrieval.cold_start import KINDS, cold_start
from deepretrieval.training import build_eval_task, has_checkpoint, local_device, rewrite_settings, train_run

VARIANTS = (("raw", "raw input"), ("zero_shot", "zero-shot model"), ("sft", "cold start (SFT), before RL"),
            ("rl", "RL model"), ("or_rule", "OR-of-words rule"))


def scores(row: dict | None, metric: str) -> dict | None:
    if row is None:
        return None
    return {"score": row.get(metric), "valid_format": row.get("valid_format"),
            "mean_reward": row.get("mean_reward"), "n": row.get("n")}


def compare(rows: dict[str, dict], metric: str) -> dict:
    """Scores of raw / zero-shot / SFT / RL / the OR rule (those in `rows`, evaluation rows by
    variant) on one split, and the intervals of RL's gain over each."""
    out = {name: scores(row, metric) for name, row in rows.items() if row is not None}
    rl = rows["rl"]["per_example"]
    for name in ("raw", "zero_shot", "sft", "or_rule"):
        if rows.get(name) is not None:
            low, high = paired_bootstrap_ci(rows[name]["per_example"], rl)
            out[f"rl_minus_{name}_ci95"] = [round(low, 4), round(high, 4)]
    return out


def or_rule_row(task, split: str) -> dict:
    """The OR-of-words rule as an evaluation row (literature search: what a rule reaches)."""
    return {"variant": "or_rule", **task.evaluate([or_of_words(q) for q in task.raw_queries(split)], split)}


def markdown(numbers: dict, metric: str) -> list[str]:
    lines = [f"| split | variant | {metric} | valid format | RL minus it, 95 % CI |", "|---|---|---:|---:|---|"]
    for split, found in numbers.items():
        for key, label in VARIANTS:
            if key not in found:
                continue
            v = found[key]
            valid = "n/a" if v["valid_format"] is None else f"{100 * v['valid_format']:.1f} %"
            ci = found.get(f"rl_minus_{key}_ci95")
            lines.append(f"| {split} | {label} | {v['score']:.4f} | {valid} | "
                         f"{'' if ci is None else f'[{ci[0]:+.4f}, {ci[1]:+.4f}]'} |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="experiment TOML")
    parser.add_argument("--name", default="rl_gain", help="bench/results/<name>.jsonl and <name>/")
    parser.add_argument("--minutes", type=float, help="training wall-clock budget (default: the config's)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    parser.add_argument("--out", help="run folder (default: the config's run.out_dir)")
    parser.add_argument("--no-record", action="store_true", help="do not write to bench/results/")
    parser.add_argument("--cold-start", choices=KINDS, metavar="KIND",
                        help="SFT on the train split's answers ([sft] settings) before RL: gold "
                             "(gold SQL / the user's text) or best_edit (the best "
                             "single-word edit of the user's text by the reward)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in its run folder: the cold start and RL each go on "
                             "from their newest checkpoint (a part without one starts anew); "
                             "rl.max_minutes counts the training time before the kill")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    return parser.parse_intermixed_args(argv)     # KEY=VALUE overrides may come between options


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    extra = ["run.eval_split=val", f"model.device={args.device}"]
    extra += [f"run.out_dir={json.dumps(args.out)}"] if args.out else []
    extra += [f"rl.max_minutes={args.minutes}"] if args.minutes is not None else []
    cfg = load_config(args.config, list(args.overrides) + extra)
    out = Path(cfg.run.out_dir)
    base_model = cfg.model.name
    t0 = time.perf_counter()
    sft_export = cold_start(cfg, out / "sft", args.cold_start, args.resume) if args.cold_start else None
    if sft_export is not None:
        cfg = load_config(args.config, list(args.overrides) + extra + [f"model.name={json.dumps(str(sft_export))}"])
    result = train_run(cfg, out, resume=args.resume and has_checkpoint(out))
    train_s = time.perf_counter() - t0

    task = build_eval_task(cfg)
    if cfg.run.eval_limit:
        task.limit(cfg.run.eval_limit, splits=["val", "test"])
    device, settings = local_device(cfg), rewrite_settings(cfg)

    def rewrite_row(model_name: str, split: str, desc: str) -> dict:
        model, tok = load_policy(model_name, device, cfg.model.chat_template)
        return by_variant(evaluate_variants(task, split, model, tok, settings, desc=desc))["rewrite"]

    before, after = by_variant(result.before), by_variant(result.after)
    rows = {"val": {"raw": before.get("raw"), "zero_shot": before["rewrite"], "rl": after["rewrite"]},
            "test": {"raw": by_variant(evaluate_variants(task, "test")).get("raw"),
                     "zero_shot": rewrite_row(base_model, "test", "test zero-shot"),
                     "rl": rewrite_row(str(out / EXPORT), "test", "test RL")}}
    if sft_export is not None:          # training's step-0 evaluation was of the SFT model
        rows["val"]["sft"] = rows["val"]["zero_shot"]
        rows["val"]["zero_shot"] = rewrite_row(base_model, "val", "val zero-shot")
        rows["test"]["sft"] = rewrite_row(str(sft_export), "test", "test SFT")
    if task.name == "literature_search":
        for split in rows:
            rows[split]["or_rule"] = or_rule_row(task, split)
    metric = task.headline
    numbers = {split: compare(found, metric) for split, found in rows.items()}
    wall = time.perf_counter() - t0
    task.close()

    command = "python -m bench.rl_gain " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    curves = plot_curves(out)
    examples = rows["test"]["rl"].get("examples", [])
    report = [f"# {args.name}: {base_model} trained with {'SFT, then ' if sft_export else ''}"
              f"{cfg.rl.algorithm.upper()} on {cfg.task.family} "
              f"({cfg.task.data})", "", "```", command, "```", "",
              f"- {result.steps} RL steps in {train_s / 60:.1f} min (training{', the cold start' if sft_export else ''}"
              f" and val evaluations), "
              f"{wall / 60:.1f} min in all on {device_name()}{' since the resume' if args.resume else ''}; "
              f"{result.train_prompts} training examples",
              f"- metric: {metric} on every example of each split; greedy decoding, at most "
              f"{cfg.run.eval_max_new_tokens} new tokens", "", *markdown(numbers, metric), "",
              *[f"![{p.stem}]({p.name})" for p in curves]]
    for ex in examples[:3]:
        report += ["", f"RL model, test example {ex['id']}: engine query = {ex['answer']!r}", "```",
                   ex["completion"].strip(), "```"]
    text = "\n".join(report) + "\n"
    (out / "report.md").write_text(text)
    print(text)
    if args.no_record:
        return
    folder = RESULTS_DIR / "rl_gain" / out.name        # one folder per run: variants do not overwrite
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(text)
    for path in [*curves, out / METRICS]:
        shutil.copy(path, folder / path.name)
    append_result(args.name, {"metric": metric, **numbers["test"], "val": numbers["val"],
                              "base_model": base_model, "cold_start": args.cold_start,
                              "steps": result.steps, "train_minutes": round(train_s / 60, 2), "resumed": args.resume,
                              "minutes": round(wall / 60, 2), "command": command, "config": cfg.to_dict()})


if __name__ == "__main__":
    main()

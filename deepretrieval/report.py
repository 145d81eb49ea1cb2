"""Printing and reporting evaluation rows (deepretrieval.evaluation) and training curves.

    print_rows(rows, as_json=False, label="after")    # a text table, or one JSON object per line
    markdown_table([("raw", raw_row), ("after RL", rl_row)], "ndcg@10")
    plot_curves("runs/demo")                          # reward.png, valid_format.png, kl.png, length.png
    table, verdict = training_progress(read_jsonl("runs/demo/metrics.jsonl"))   # did anything rise?
"""
from __future__ import annotations

import json
from pathlib import Path

from deepretrieval.rl.run_logging import METRICS, read_jsonl

# figure name -> the metrics.jsonl keys it draws
CURVES = {"reward.png": ("reward/mean",), "valid_format.png": ("reward/format_ok",), "kl.png": ("kl",),
          "length.png": ("response_length/mean", "response_length/max")}
# the training-progress columns: metrics.jsonl key -> header ("reward/generated_mean" is over
# everything generated; with dynamic sampling "reward/mean" covers the trained groups only)
PROGRESS = {"reward/generated_mean": "mean reward", "reward/format_ok": "valid format"}
_HIDDEN = ("variant", "examples", "step", "per_example")


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_rows(rows: list[dict], as_json: bool, label: str = "") -> None:
    for row in rows:
        if as_json:
            print(json.dumps({**({"when": label} if label else {}), **row}))
        else:
            values = "  ".join(f"{k}={fmt(v)}" for k, v in row.items() if k not in _HIDDEN)
            print(f"{label + ' ' if label else ''}{row['variant']:<15} {values}")


def markdown_table(named_rows: list[tuple[str, dict]], metric: str) -> str:
    """| variant | metric | valid format | mean reward | (n/a where a column does not apply)."""
    lines = [f"| variant | {metric} | valid format | mean reward |", "|---|---:|---:|---:|"]
    for name, row in named_rows:
        valid = row.get("valid_format")
        lines.append(f"| {name} | {fmt(row.get(metric))} | "
                     f"{'n/a' if valid is None else f'{100 * valid:.1f}%'} | {fmt(row.get('mean_reward'))} |")
    return "\n".join(lines)


def plot_curves(run_dir: str | Path) -> list[Path]:
    """One PNG per entry of CURVES (metric against RL step); those whose keys were never logged
    are not drawn."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / METRICS)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for name, keys in CURVES.items():
        keys = [k for k in keys if any(k in r for r in rows)]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(5, 3))
        for k in keys:
            ax.plot([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r], marker="o", label=k)
        ax.set_xlabel("RL step")
        ax.set_title(name.removesuffix(".png"))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=80)
        plt.close(fig)
        written.append(run_dir / name)
    return written


def by_variant(rows: list[dict]) -> dict[str, dict]:
    return {row["variant"]: row for row in rows}


def summary(before: list[dict], after: list[dict], metric: str, steps: int) -> dict:
    """The numbers of a raw / zero-shot / after-RL comparison, flat (for JSON lines)."""
    b, a = by_variant(before), by_variant(after)
    out = {"metric": metric, "rl_steps": steps}
    for name, row in (("raw", b.get("raw")), ("zero_shot", b.get("rewrite")), ("rl", a.get("rewrite")),
                      ("zero_shot_or_raw", b.get("rewrite_or_raw")), ("rl_or_raw", a.get("rewrite_or_raw"))):
        if row is not None:
            out[name] = {"score": row.get(metric), "valid_format": row.get("valid_format"),
                         "mean_reward": row.get("mean_reward"), "n": row.get("n")}
    return out


def _progress_value(rows: list[dict], key: str) -> float | None:
    values = [r.get(key, r.get("reward/mean") if key == "reward/generated_mean" else None) for r in rows]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def training_progress(rows: list[dict]) -> tuple[list[str], str]:
    """From metrics.jsonl rows: a markdown table of the mean reward and valid-format rate over the
    first, middle and last third of the steps, and one sentence saying whether they rose."""
    if not rows:
        return [], "No RL step ran, so nothing was learned."
    n, third = len(rows), max(1, len(rows) // 3)
    parts = [("first", rows[:third]), ("middle", rows[third:n - third] or rows[:1]), ("last", rows[n - third:])]
    table = ["| steps | " + " | ".join(PROGRESS.values()) + " |", "|---|" + "---:|" * len(PROGRESS)]
    for name, part in parts:
        cells = [fmt(_progress_value(part, key)) for key in PROGRESS]
        table.append(f"| {name} third ({part[0]['step']}-{part[-1]['step']}) | " + " | ".join(cells) + " |")
    first, last = parts[0][1], parts[2][1]
    gains = {label: (_progress_value(first, key), _progress_value(last, key)) for key, label in PROGRESS.items()}
    rose = [f"{label} {a:.3f} -> {b:.3f}" for label, (a, b) in gains.items() if a is not None and b is not None and b > a]
    if rose:
        return table, f"Learned during training: {', '.join(rose)} (first third of the steps -> last third)."
    zero_var = _progress_value(rows, "groups/zero_variance")
    why = (f" In {100 * zero_var:.0f} % of the groups every completion got the same reward, so GRPO had "
           "no signal to learn from there." if zero_var else "")
    return table, "Nothing was learned: neither the mean reward nor the valid-format rate rose." + why


def experiment_report(title: str, command: str, setup: list[str], before: list[dict],
                      after: list[dict], metric: str, steps: int, curves: list[Path],
                      timing: str, metrics_rows: list[dict]) -> str:
    """Markdown: setup, the raw / zero-shot / after-RL table, training progress and a sentence on
    whether anything was learned, curves, example completions."""
    b, a = by_variant(before), by_variant(after)
    named = [("raw input", b.get("raw")), ("zero-shot model", b.get("rewrite")),
             (f"after RL ({steps} steps)", a.get("rewrite")),
             ("zero-shot model, raw input where none parsed", b.get("rewrite_or_raw")),
             ("after RL, raw input where none parsed", a.get("rewrite_or_raw"))]
    progress, verdict = training_progress(metrics_rows)
    lines = [f"# {title}", "", "```", command, "```", "", *[f"- {s}" for s in setup], f"- {timing}", "",
             "## Evaluation", "", markdown_table([(n, r) for n, r in named if r is not None], metric), "",
             "`valid format`: completions that pass the strict format check and hold a JSON answer. "
             "`mean reward`: the training reward; for the raw input, the reward it would get written "
             "as a well-formed answer. The \"raw input where none parsed\" rows are a labelled "
             "fallback, not the model's score.", "", "## Training", "", *progress, "", verdict, ""]
    lines += [f"![{p.stem}]({p.name})" for p in curves]
    for name, row in (("zero-shot", b.get("rewrite")), ("after RL", a.get("rewrite"))):
        for ex in (row or {}).get("examples", [])[:2]:
            lines += ["", f"{name}, example {ex['id']}: engine query = {ex['answer']!r}", "```",
                      ex["completion"].strip(), "```"]
    return "\n".join(lines) + "\n"


def describe_run(cfg, result, data: str) -> list[str]:
    """The setup lines of an experiment report (cfg: RunConfig, result: training.RunResult)."""
    r, e = cfg.rl, cfg.task.engine
    n_eval = int(result.after[0]["n"]) if result.after else 0
    return [f"model: {cfg.model.name}; data: {data}; engine: our {e.kind} (BM25 k1={e.k1}, b={e.b})",
            f"evaluation: the first {n_eval} examples of the {cfg.run.eval_split} split, "
            f"{'greedy' if cfg.run.eval_greedy else 'sampled'}, at most {cfg.run.eval_max_new_tokens} new tokens",
            f"training: {r.algorithm.upper()} on the {result.train_prompts} training examples, "
            f"{result.steps} steps x {r.prompts_per_step} claims x "
            f"{r.group_size} completions, at most {r.sampling.max_new_tokens} new tokens, temperature "
            f"{r.sampling.temperature}, lr {r.actor_optim.lr}, KL coef {r.kl_coef}"
            + (f", time limit {r.max_minutes} min" if r.max_minutes else "")]

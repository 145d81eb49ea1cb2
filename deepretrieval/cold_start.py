"""The supervised cold start before RL: every training example answered in the task's format, then
`deepretrieval sft` on those traces. Two kinds of answers:
  gold       the example's own target: the gold SQL for text-to-SQL (the paper's SQL recipe); for
             query tasks the user's text, which teaches the answer format only
  best_edit  query tasks: the best single-word edit of the user's text by the task's own reward on
             the training example (an offline search over edits; train labels only). Rewrite mode:
             the text with one word repeated (a repeated term weighs twice in BM25) or dropped, or
             unchanged when nothing beats it; expand mode: the one word to append.

    python -m bench.rl_gain --config configs/spider_crossdb_smollm2.toml --cold-start gold   # SFT, then GRPO
    python scripts/format_traces.py --config FILE --out traces.jsonl [--kind best_edit]     # traces only

    from deepretrieval.cold_start import cold_start
    export = cold_start(cfg, Path("runs/x/sft"))     # cfg.sft settings; returns the SFT export folder
"""
from __future__ import annotations

import json
from pathlib import Path

from deepretrieval.run_config import RunConfig
from deepretrieval.training import has_checkpoint, sft_run

TRACES = "traces.jsonl"
KINDS = ("gold", "best_edit")


def single_word_edits(text: str, expand: bool) -> list[str]:
    """Candidate answers: expand mode, each distinct word of `text` (to append); rewrite mode,
    `text` itself, then `text` with each distinct word repeated, then with each dropped. A word is
    a whitespace token without its surrounding punctuation, of at least 3 characters."""
    tokens = text.split()
    bare = [t.strip(".,;:()[]\"'") for t in tokens]
    words = list(dict.fromkeys(w for w in bare if len(w) > 2))
    if expand:
        return words
    dropped = [" ".join(t for t, b in zip(tokens, bare) if b != w) for w in words]
    return [text, *[f"{text} {w}" for w in words], *dropped]


def best_edits(task, split: str = "train") -> list[str]:
    """Per example of `split`, the candidate of `single_word_edits` with the highest reward
    (the first on ties, so an unchanged text wins ties in rewrite mode)."""
    expand = getattr(task, "query_mode", "rewrite") == "expand"
    out = []
    for p, text in zip(task.prompts(split), task.raw_queries(split)):
        candidates = single_word_edits(text, expand) or [text]
        rewards, _ = task.reward([p] * len(candidates), [task.well_formed(p, c) for c in candidates])
        out.append(candidates[max(range(len(candidates)), key=rewards.__getitem__)])
    return out


def answer_traces(task, kind: str = "gold") -> list[dict]:
    """{"messages": [...the prompt's turns, the assistant's answer]} per training example, the
    answer of the given kind (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"cold start kind must be one of {KINDS}, got {kind!r}")
    if kind == "best_edit" and task.answer_key != "query":
        raise ValueError("best_edit traces are for query tasks; text-to-SQL has gold SQL")
    prompts, examples = task.prompts("train"), task.split_examples("train")
    if any(p.messages is None for p in prompts):
        raise ValueError('traces need chat prompts: set task.prompt_frame = "chat"')
    if kind == "best_edit":
        answers = best_edits(task)
    else:
        answers = [ex["gold_sql"] if task.answer_key == "sql" else ex["input"] for ex in examples]
    traces = []
    for p, answer in zip(prompts, answers):
        content = p.assistant_prefix + task.well_formed(p, answer)
        traces.append({"messages": [*p.messages, {"role": "assistant", "content": content}]})
    return traces


def write_traces(cfg: RunConfig, path: Path, kind: str = "gold") -> int:
    """The config's training examples as traces in a JSONL file; returns how many."""
    from deepretrieval.tasks.registry import build_task
    task = build_task(cfg.task)
    try:
        traces = answer_traces(task, kind)
    finally:
        task.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))
    return len(traces)


def cold_start(cfg: RunConfig, run_dir: Path, kind: str = "gold", resume: bool = False) -> Path:
    """SFT of cfg.model on traces of its train split (run_dir/traces.jsonl), with cfg.sft;
    returns the export folder to start RL from. resume: where run_dir holds a checkpoint, continue
    from it with the traces already written (a finished SFT only exports again); else start anew."""
    resume = resume and has_checkpoint(run_dir)
    if not resume:
        write_traces(cfg, run_dir / TRACES, kind)
    return Path(sft_run(cfg, run_dir / TRACES, run_dir, resume=resume)["export"])

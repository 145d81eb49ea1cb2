"""`deepretrieval rewrite`: one information need -> the model's query -> the engine's top hits.

    deepretrieval rewrite --model smollm2-135m "vitamin D prevents fractures in the elderly"
    deepretrieval rewrite --checkpoint runs/demo --config configs/demo.toml "NEED" --top 5 --json

The task (prompt template and engine) and the generation settings (run.eval_max_new_tokens,
run.eval_greedy) come from --config (default: the demo's, deepretrieval/demo.toml). Query tasks
only (classic IR, evidence seeking, literature search): text-to-SQL needs a database. An empty
need is refused before anything is loaded.
"""
from __future__ import annotations

import argparse
import json

from .train import load_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="run dir, checkpoint dir or HF folder")
    who.add_argument("--model", help="built-in model name or model folder (untrained)")
    parser.add_argument("need", help="the information need, in the user's words")
    parser.add_argument("--config", help="experiment TOML for the task and engine (default: the demo's)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--top", type=int, default=10, help="hits to show (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def search(task, query: str, top: int) -> list[dict]:
    """The engine's top hits for one query, with a title/snippet where the task has the text."""
    if hasattr(task, "retriever"):                                   # BM25 / dense
        hits = task.retriever.search([query], k=top)[0]
        texts = getattr(task, "passages", None) or {}
        return [{"id": d, "score": round(float(s), 4), "text": texts.get(d, "")[:120]} for d, s in hits]
    ids = task.backend.search(query, max_results=top)               # literature engines
    return [{"id": i} for i in ids[:top]]


def run(args: argparse.Namespace) -> int:
    from deepretrieval.commands.demo import demo_config_path
    from deepretrieval.evaluation import rewrite
    from deepretrieval.policy import load_policy
    from deepretrieval.training import build_eval_task, rewrite_settings
    from deepretrieval.model.registry import resolve_device
    from deepretrieval.tasks.prompts import build_prompt
    if not args.need.strip():
        raise SystemExit('rewrite: the information need is empty; give it as text, e.g. '
                         'deepretrieval rewrite --model smollm2-135m "vitamin D prevents fractures"')
    args.config = args.config or str(demo_config_path())
    cfg = load_run_config(args)
    if cfg.task.family == "text_to_sql":
        raise SystemExit("rewrite works on query tasks; for text-to-SQL use `deepretrieval eval`")
    task = build_eval_task(cfg)
    model, tokenizer = load_policy(args.checkpoint or args.model, resolve_device(cfg.model.device),
                                   cfg.model.chat_template)
    prompt = build_prompt(task.template, args.need)
    completion = rewrite(model, tokenizer, [prompt], rewrite_settings(cfg))[0]
    query = task.answers([prompt], [completion])[0]
    hits = search(task, query, args.top) if query else []
    out = {"need": args.need, "query": query, "completion": completion, "hits": hits}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"need:  {args.need}\nmodel: {prompt.assistant_prefix}{completion}\n")
    if query is None:
        print("query: (none: the completion has no parsable <answer> block, so no search was made)")
        return 0
    print(f"query: {query}\n")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit['id']}" + (f"  {hit['score']:.3f}  {hit['text']}" if "score" in hit else ""))
    return 0

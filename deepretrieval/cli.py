"""The `deepretrieval` command line: one console script, one module per subcommand.

Run `deepretrieval --help` for the list, `deepretrieval SUBCOMMAND --help` for its options.
Each subcommand lives in `deepretrieval/commands/<name>.py` and defines
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their command
runs, so `deepretrieval --help` stays instant and one command's heavy imports never slow another.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under deepretrieval.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "generate text with a built-in or local model"),
    "demo": ("demo", "offline demo: rewrite SciFact-style queries for BM25 and train with GRPO"),
    "train": ("train", "RL training from a TOML config (also under torchrun)"),
    "sft": ("sft", "supervised fine-tuning on chat traces (cold start before RL)"),
    "eval": ("eval", "evaluate raw queries and a checkpoint's rewrites on a task"),
    "rewrite": ("rewrite", "rewrite one information need and show the engine's top hits"),
    "export": ("export", "export a checkpoint to HF format (config.json + safetensors)"),
    "eval-retrieval": ("eval_retrieval", "NDCG/Recall of BM25 or a dense retriever on a BEIR folder"),
    "build-index": ("build_index", "build and save a BM25 or dense index of a BEIR corpus"),
    "search": ("search", "search PubMed, ClinicalTrials.gov, the offline MEDLINE backend or a saved index"),
    "eval-sql": ("eval_sql", "execution accuracy of SQL predictions on Spider or BIRD"),
    "bench": ("bench", "run the benchmarks in bench/"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepretrieval",
        description="DeepRetrieval from scratch: query rewriting by RL against real search engines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<16}{h}" for n, (_, h) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see the list below")
    return parser


def _load(name: str):
    module_name, _ = COMMANDS[name]
    try:
        return importlib.import_module(f"deepretrieval.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"deepretrieval.commands.{module_name}":
            raise SystemExit(f"deepretrieval: the '{name}' command is not available in this version") from exc
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = _load(name)
    parser = argparse.ArgumentParser(prog=f"deepretrieval {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(rest)   # KEY=VALUE overrides may come between options
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `deepretrieval` command line: one console script, one module per subcommand.

Run `deepretrieval --help` for the list, `deepretrieval SUBCOMMAND --help` for its options and
examples. Each subcommand lives in `deepretrieval/commands/<name>.py` and defines
`add_arguments(parser)` and `run(args) -> int`; its module docstring opens with a usage block
(indented example command lines), which `--help` shows. Modules are imported only when their
command runs, so `deepretrieval --help` stays instant and one command's heavy imports never slow
another. Benchmarks are not commands: they run as `python -m bench.<name>` (bench/).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under deepretrieval.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "generate text with a built-in or local model"),
    "demo": ("demo", "offline demo: GRPO teaches SmolLM2-135M PubMed-style queries for SciFact claims"),
    "train": ("train", "RL training from a TOML config (also under torchrun)"),
    "sft": ("sft", "supervised fine-tuning on chat traces (cold start before RL)"),
    "eval": ("eval", "evaluate raw queries and a checkpoint's rewrites on a task"),
    "rewrite": ("rewrite", "rewrite one information need and show the engine's top hits"),
    "export": ("export", "export a checkpoint to HF format (config.json + safetensors)"),
    "eval-retrieval": ("eval_retrieval", "NDCG/Recall of BM25 or a dense retriever on a BEIR folder"),
    "build-index": ("build_index", "build and save a BM25 or dense index of a BEIR corpus"),
    "search": ("search", "search PubMed, ClinicalTrials.gov, the offline MEDLINE backend or a saved index"),
    "eval-sql": ("eval_sql", "execution accuracy of SQL predictions on Spider or BIRD"),
}
EPILOG = "benchmarks run from a checkout as `python -m bench.<name>` (see bench/ and docs/PERFORMANCE.md)"


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepretrieval",
        description="DeepRetrieval from scratch: query rewriting by RL against real search engines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<16}{h}" for n, (_, h) in COMMANDS.items()) + f"\n\n{EPILOG}",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see the list below")
    return parser


def command_parser(name: str) -> tuple:
    """(the command's module, its argument parser: one-line description, options, examples)."""
    module = importlib.import_module(f"deepretrieval.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"deepretrieval {name}", description=COMMANDS[name][1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n" + "\n".join(f"  {x}" for x in usage_examples(module)))
    module.add_arguments(parser)
    return module, parser


def usage_examples(module) -> list[str]:
    """The usage block of a command's module docstring: its first run of indented lines (a line
    ending in a backslash is joined with the next)."""
    lines, block = [], False
    for line in (module.__doc__ or "").splitlines():
        if line.startswith("    ") and line.strip():
            block = True
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
            else:
                lines.append(line.strip())
        elif block:
            break
    return lines


def device_or_exit(name: str, setting: str = "--device"):
    """The torch.device a user named (model.registry.resolve_device); a bad name or a missing GPU
    is a one-line error naming `setting` and the valid values."""
    from deepretrieval.model.registry import resolve_device
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise SystemExit(f"{setting}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2
    module, parser = command_parser(argv[0])
    args = parser.parse_intermixed_args(argv[1:])   # KEY=VALUE overrides may come between options
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

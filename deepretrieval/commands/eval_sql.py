"""`deepretrieval eval-sql`: execution accuracy of SQL predictions on Spider or BIRD.

    deepretrieval eval-sql --data builtin:spider --format spider --gold
    deepretrieval eval-sql --data DIR --format bird --predictions preds.jsonl --timeout 30 --workers 8 --json

Predictions, aligned with the split's examples in file order (one entry per example, skipped
ones included, so the file has exactly as many entries as the split):
- a `.jsonl` file: one JSON object per line with the SQL under "sql" (it may hold newlines);
  an optional "db_id" is checked against the example's;
- any other file: one SQL per line (Spider's official format); as in Spider's evaluation.py,
  text after a tab (e.g. "SQL<TAB>db_id") is ignored. An empty line is an empty prediction
  (a pred_error), never dropped.
The file must be UTF-8: a byte that is not is an error naming the line (we do not guess what
the SQL was meant to say). SQL that cannot be run as text (a lone surrogate written as "\udc80"
in JSON) is that example's pred_error. `--workers N` runs the queries in N supervised worker
processes (sqlexec.pool: a query past its time limit or a worker that dies costs one example,
never the run); `--workers 0` runs them in this process.
`--gold` evaluates each gold query against itself: a check of the data and of the evaluator.

Accuracy = correct / evaluated, where evaluated = total - skipped; an example is skipped only
when its database file is missing, and the reasons are printed (and listed under
"skipped_reasons" with --json). Gold errors and timeouts are data problems: counted among the
evaluated, never correct, and printed. `--details FILE` writes one JSON line per example
(index, db_id, status, message, row counts, seconds; status "skipped" for skipped ones).
`--remove-distinct` deletes DISTINCT from every query first, as the official Spider evaluator
does by default (see sqlexec.compare for what we follow and why).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from deepretrieval.sqlexec.datasets import FORMATS, SqlExample, load_examples
from deepretrieval.sqlexec.outcome import STATUSES, Outcome
from deepretrieval.sqlexec.pool import SqlItem, evaluate_batch
from deepretrieval.sqlexec.sandbox import Limits
from deepretrieval.tasks.packaged_data import resolve_data_path

_SHOWN_PROBLEMS = 10


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="Spider or BIRD data folder (builtin:spider: the built-in dev set)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="folder layout and comparison rule")
    parser.add_argument("--split", default="dev", help="which split (default: dev)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="one SQL per line, or .jsonl with a 'sql' field")
    source.add_argument("--gold", action="store_true", help="evaluate the gold SQL against itself")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per query (default 30, as the paper)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all cores; 0 = in this process)")
    parser.add_argument("--remove-distinct", action="store_true",
                        help="delete DISTINCT from all queries first, as the official Spider evaluator does "
                             "unless given --keep_distinct (default here: run the queries as written)")
    parser.add_argument("--details", type=Path, help="write one JSON line per example to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def read_predictions(path: Path, examples: list[SqlExample]) -> list[str]:
    """The predicted SQL of each example (see the module docstring for the formats)."""
    if not path.is_file():
        raise SystemExit(f"eval-sql: predictions file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SystemExit(f"eval-sql: {path} line {line} is not UTF-8 (byte 0x{data[exc.start]:02x} at byte "
                         f"{column} of the line); save the predictions as UTF-8") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not one more prediction
    if len(lines) != len(examples):
        raise SystemExit(f"eval-sql: {path} has {len(lines)} predictions but the split has {len(examples)} "
                         "examples; give one per example, in order (skipped ones included)")
    if path.suffix != ".jsonl":
        return [line.split("\t")[0].strip() for line in lines]
    sqls = []
    for number, (line, example) in enumerate(zip(lines, examples), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"eval-sql: {path} line {number} is not JSON ({exc}); write one object per line") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("sql"), str):
            raise SystemExit(f"eval-sql: {path} line {number} has no string 'sql' field")
        if "db_id" in entry and entry["db_id"] != example.db_id:
            raise SystemExit(f"eval-sql: {path} line {number} is for db_id {entry['db_id']!r} but example "
                             f"{example.index} is on {example.db_id!r}; the file is out of order")
        sqls.append(entry["sql"])
    return sqls


def run(args) -> int:
    if args.workers < 0:
        raise SystemExit(f"eval-sql: --workers {args.workers}: give 0 (in this process) or more")
    try:
        examples = load_examples(resolve_data_path(args.data), args.format, args.split)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"eval-sql: {exc}") from exc
    preds = [e.gold_sql for e in examples] if args.gold else read_predictions(args.predictions, examples)

    runnable = [(e, p) for e, p in zip(examples, preds) if e.missing_reason is None]
    skipped = Counter(e.missing_reason for e in examples if e.missing_reason is not None)
    outcomes = evaluate_batch([SqlItem(str(e.db_path), p, e.gold_sql) for e, p in runnable],
                              workers=args.workers, comparison=args.format, limits=Limits(timeout_s=args.timeout),
                              drop_distinct=args.remove_distinct, progress=not args.json)
    counts = Counter(o.status.value for o in outcomes)
    correct = counts["match"]
    summary = {
        "accuracy": correct / len(outcomes) if outcomes else 0.0,
        "total": len(examples), "evaluated": len(outcomes), "correct": correct,
        "skipped": sum(skipped.values()),
        **{status: counts[status] for status in STATUSES},
        "skipped_reasons": dict(skipped),
    }
    if args.details:
        _write_details(args.details, runnable, outcomes, examples)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_report(summary, runnable, outcomes)
    return 0


def _write_details(path: Path, runnable: list, outcomes: list[Outcome], examples: list[SqlExample]) -> None:
    by_index = {e.index: o for (e, _), o in zip(runnable, outcomes)}
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            outcome = by_index.get(e.index)
            record = ({"status": "skipped", "message": e.missing_reason} if outcome is None else outcome.to_dict())
            f.write(json.dumps({"index": e.index, "db_id": e.db_id, **record}) + "\n")


def _print_report(summary: dict, runnable: list, outcomes: list[Outcome]) -> None:
    print(f"execution accuracy: {100 * summary['accuracy']:.2f}% "
          f"({summary['correct']}/{summary['evaluated']} evaluated; {summary['total']} examples, "
          f"{summary['skipped']} skipped)")
    for status in STATUSES:
        print(f"  {status:<13}{summary[status]}")
    for reason, count in summary["skipped_reasons"].items():
        print(f"skipped {count}: {reason}")
    problems = [(e, o) for (e, _), o in zip(runnable, outcomes) if o.gold_problem]
    for e, o in problems[:_SHOWN_PROBLEMS]:
        print(f"DATA PROBLEM example {e.index} ({e.db_id}): {o.status.value}: {o.message}")
    if len(problems) > _SHOWN_PROBLEMS:
        print(f"... and {len(problems) - _SHOWN_PROBLEMS} more gold problems (see --details)")

"""Record files of the task datasets: jsonl(.gz), json, parquet (when pyarrow is there), DPR tsv/csv.

    from deepretrieval.tasks.data_files import read_records, split_file
    rows = read_records("data/pubmed/train.jsonl")       # list[dict], one per line / row
    path = split_file("data/pubmed", "test")              # data/pubmed/test.{jsonl,jsonl.gz,json,parquet,...}

Formats met in the paper's data and its sources:
* jsonl / jsonl.gz — the paper's raw files (literature search: {"pico", "publication_pmids" or
  "trial_nctids", "pub_date"}; QA: {"question", "answers"}) and our demo data.
* json — a list of objects (DPR's nq-train.json, Spider/BIRD's dev.json).
* parquet — the paper's verl files (code/data/**.parquet): the builder's columns ("input",
  "label", "query", "target", ...) plus "prompt" / "reward_model" / "extra_info". pyarrow is not a
  dependency of this project; reading parquet without it raises an error that says to install it.
* tsv / csv — DPR's QA files (nq-test.qa.csv: question TAB python-list-of-answers, no header).
Errors name the file and line.
"""
from __future__ import annotations

import ast
import csv
import gzip
import json
from pathlib import Path

SPLIT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".qa.csv", ".tsv", ".csv")


class DataFormatError(ValueError):
    """A data file that cannot be read as records: the message names the file and line."""


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: not a JSON line ({exc})") from exc
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataFormatError(f"{path}: expected a JSON list of objects")
    return data


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataFormatError(f"{path}: reading parquet needs pyarrow, which is not installed "
                              "(pip install pyarrow), or convert the file to jsonl") from exc
    return pq.read_table(path).to_pylist()


def _read_dpr_qa(path: Path) -> list[dict]:
    """DPR's *.qa.csv / tsv: question <TAB> answers (a Python/JSON list literal), no header."""
    rows = []
    with _open_text(path) as f:
        for lineno, parts in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not parts:
                continue
            if len(parts) != 2:
                raise DataFormatError(f"{path}:{lineno}: expected 'question<TAB>[answers]', got {len(parts)} fields")
            try:
                answers = ast.literal_eval(parts[1])
            except (ValueError, SyntaxError) as exc:
                raise DataFormatError(f"{path}:{lineno}: answers {parts[1][:80]!r} is not a list literal") from exc
            if isinstance(answers, str):
                answers = [answers]
            rows.append({"question": parts[0], "answers": list(answers)})
    return rows


def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _read_jsonl(path)
    if name.endswith((".json", ".json.gz")):
        return _read_json(path)
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith((".tsv", ".csv", ".tsv.gz", ".csv.gz")):
        return _read_dpr_qa(path)
    raise DataFormatError(f"{path}: unknown data format; use jsonl, jsonl.gz, json, parquet, or DPR tsv/csv")


def split_file(folder: str | Path, split: str) -> Path:
    """The file holding `split` in `folder`: {split}.jsonl, .jsonl.gz, .json, .parquet, .qa.csv, .tsv, .csv."""
    folder = Path(folder)
    for suffix in SPLIT_SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise FileNotFoundError(f"no {split!r} file in {folder} (looked for {split}{{{','.join(SPLIT_SUFFIXES)}}})")


def first_field(row: dict, names: tuple[str, ...], where: str):
    """The value of the first of `names` present in `row` (also inside verl's reward_model.ground_truth)."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    truth = (row.get("reward_model") or {}).get("ground_truth") or {}
    if "target" in truth and "target" in names:
        return truth["target"]
    raise DataFormatError(f"{where}: record has none of the fields {names} (fields: {sorted(row)[:12]})")

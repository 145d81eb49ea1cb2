"""Record files of the task datasets: jsonl(.gz), json, parquet (when pyarrow is there), DPR tsv/csv.

    from deepretrieval.tasks.data_files import read_records, split_file
    rows = read_records("data/pubmed/train.jsonl")       # list[dict], one per line / row
    path = split_file("data/pubmed", "test")              # data/pubmed/test.{jsonl,jsonl.gz,json,parquet,...}
    split_file("data/nq", "val")                          # val.* or, failing that, dev.*
    examples = load_msmarco_subset("data/msmarco_health") # the paper's MS MARCO subset files

Formats met in the paper's data and its sources:
* jsonl / jsonl.gz — the paper's raw files (literature search: {"pico", "publication_pmids" or
  "trial_nctids", "pub_date"}; QA: {"question", "answers"}) and our demo data.
* json — a list of objects (DPR's nq-train.json, Spider/BIRD's dev.json).
* parquet — the paper's verl files (code/data/**.parquet): the builder's columns ("input",
  "label", "query", "target", ...) plus "prompt" / "reward_model" / "extra_info". pyarrow is not a
  dependency of this project; reading parquet without it raises an error that says to install it.
* tsv / csv — DPR's QA files (nq-test.qa.csv: question TAB python-list-of-answers, no header).
A split named "dev" is the validation split when there is no "val" file (DPR, BEIR and the
paper's raw files call it dev). Errors name the file and line.
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
    """The file holding `split` in `folder`: {split}.jsonl, .jsonl.gz, .json, .parquet, .qa.csv, .tsv,
    .csv; for "val", a dev.* file when there is no val.* one."""
    folder = Path(folder)
    names = (split, "dev") if split == "val" else (split,)
    for name in names:
        for suffix in SPLIT_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    raise FileNotFoundError(f"no {split!r} file in {folder} (looked for "
                            f"{'/'.join(names)}{{{','.join(SPLIT_SUFFIXES)}}})")


MSMARCO_SUBSET_VAL = 101    # msmarco_sub.py validates on the first 101 lines of dev.jsonl


def load_msmarco_subset(folder: str | Path) -> dict[str, list[dict]]:
    """Classic-IR examples {"id", "input", "qrels"} of one of the paper's MS MARCO subsets
    (data/raw_data/msmarco/msmarco_{health,science,tech}/): train.jsonl and dev.jsonl, one
    {"question", "docs_id": [relevant passage ids]} per line. As msmarco_sub.py splits them:
    train = train.jsonl, test = all of dev.jsonl, val = its first 101 lines. The passage ids are
    MS MARCO passage ids: the engine indexes the MS MARCO passage collection."""
    folder = Path(folder)
    out = {}
    for split, name in (("train", "train"), ("test", "dev")):
        path = next((folder / f"{name}{s}" for s in (".jsonl", ".jsonl.gz") if (folder / f"{name}{s}").is_file()),
                    None)
        if path is None:
            out[split] = []
            continue
        examples = []
        for i, row in enumerate(read_records(path)):
            where = f"{path} record {i + 1}"
            docs = first_field(row, ("docs_id",), where)
            if isinstance(docs, (str, int)) or not docs:
                raise DataFormatError(f"{where}: docs_id must be a non-empty list of passage ids")
            examples.append({"id": str(i), "input": first_field(row, ("question",), where),
                             "qrels": {str(d): 1 for d in docs}})
        out[split] = examples
    if not out["train"] and not out["test"]:
        raise FileNotFoundError(f"{folder} has neither train.jsonl nor dev.jsonl (an MS MARCO subset folder)")
    out["val"] = out["test"][:MSMARCO_SUBSET_VAL]
    return out


def first_field(row: dict, names: tuple[str, ...], where: str):
    """The value of the first of `names` present in `row` (also inside verl's reward_model.ground_truth)."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    truth = (row.get("reward_model") or {}).get("ground_truth") or {}
    if "target" in truth and "target" in names:
        return truth["target"]
    raise DataFormatError(f"{where}: record has none of the fields {names} (fields: {sorted(row)[:12]})")

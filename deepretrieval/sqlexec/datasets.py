"""Load text-to-SQL examples from the Spider and BIRD folder layouts.

    from deepretrieval.sqlexec.datasets import load_examples
    examples = load_examples("path/to/spider", "spider")     # list[SqlExample]; e.g. packaged_dataset("spider")
    [e for e in examples if e.missing_reason]                      # databases not on disk

Spider:  DIR/dev.json (db_id, question, query), DIR/tables.json, DIR/database/<db_id>/<db_id>.sqlite
         (split "train" reads train_spider.json + train_others.json).
BIRD:    DIR/dev.json (db_id, question, evidence, SQL required; difficulty optional),
         DIR/dev_databases/<db_id>/<db_id>.sqlite (split "train": train.json, train_databases/).
An example whose database file is absent is still returned, with `missing_reason` saying so,
so callers report it as skipped instead of losing it. A malformed file raises ValueError naming
the file and the entry; an absent split file raises `MissingSplit` (a FileNotFoundError: a folder
may simply not ship that split), any other absent file (Spider's tables.json) FileNotFoundError.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FORMATS: tuple[str, ...] = ("spider", "bird")
_SPIDER_FILES = {"dev": ("dev.json",), "train": ("train_spider.json", "train_others.json")}


@dataclass(frozen=True)
class SqlExample:
    index: int          # position in the split (what a one-SQL-per-line predictions file aligns to)
    db_id: str
    question: str
    gold_sql: str
    db_path: Path
    evidence: str = ""  # BIRD's external knowledge; "" for Spider
    difficulty: str = ""

    @property
    def missing_reason(self) -> str | None:
        """Why this example cannot be executed, or None when its database file exists."""
        if self.db_path.is_file():
            return None
        return f"database file missing: {self.db_path}"


class MissingSplit(FileNotFoundError):
    """The split's own file is not in the folder."""


def _read_split(path: Path) -> list[dict]:
    if not path.is_file():
        raise MissingSplit(f"{path} does not exist: the folder has no such split (or is not a Spider/BIRD folder)")
    return _read_json_list(path)


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
    return data


def _field(entry: dict, key: str, path: Path, position: int):
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{path}: entry {position} has no {key!r} field")
    return entry[key]


def load_spider_tables(data_dir: str | Path) -> dict[str, dict]:
    """tables.json as {db_id: schema entry} (table_names_original, column_names_original, ...)."""
    path = Path(data_dir) / "tables.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a Spider folder holds tables.json (the database schemas) "
                                "beside dev.json and database/")
    return {_field(entry, "db_id", path, i): entry for i, entry in enumerate(_read_json_list(path))}


def load_spider(data_dir: str | Path, split: str = "dev") -> list[SqlExample]:
    data_dir = Path(data_dir)
    if split not in _SPIDER_FILES:
        raise ValueError(f"unknown Spider split {split!r}: expected one of {sorted(_SPIDER_FILES)}")
    known_dbs = load_spider_tables(data_dir)
    examples = []
    for name in _SPIDER_FILES[split]:
        path = data_dir / name
        for position, entry in enumerate(_read_split(path)):
            db_id = _field(entry, "db_id", path, position)
            if db_id not in known_dbs:
                raise ValueError(f"{path}: entry {position} names db_id {db_id!r}, which tables.json lacks")
            examples.append(SqlExample(
                index=len(examples), db_id=db_id, question=_field(entry, "question", path, position),
                gold_sql=_field(entry, "query", path, position),
                db_path=data_dir / "database" / db_id / f"{db_id}.sqlite"))
    return examples


def load_bird(data_dir: str | Path, split: str = "dev") -> list[SqlExample]:
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.json"
    examples = []
    for position, entry in enumerate(_read_split(path)):
        db_id = _field(entry, "db_id", path, position)
        examples.append(SqlExample(
            index=position, db_id=db_id, question=_field(entry, "question", path, position),
            gold_sql=_field(entry, "SQL", path, position), evidence=_field(entry, "evidence", path, position),
            difficulty=entry.get("difficulty", ""),
            db_path=data_dir / f"{split}_databases" / db_id / f"{db_id}.sqlite"))
    return examples


def load_examples(data_dir: str | Path, fmt: str, split: str = "dev") -> list[SqlExample]:
    """Spider or BIRD examples of one split, in file order."""
    if fmt == "spider":
        return load_spider(data_dir, split)
    if fmt == "bird":
        return load_bird(data_dir, split)
    raise ValueError(f"unknown format {fmt!r}: expected one of {FORMATS}")

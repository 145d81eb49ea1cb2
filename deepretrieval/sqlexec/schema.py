"""Render a database's schema for a text-to-SQL prompt: its CREATE TABLE statements, optionally
followed by a few sample rows of each table.

    from deepretrieval.sqlexec.schema import render_schema
    print(render_schema("database/pets_1/pets_1.sqlite", sample_rows=3))

    CREATE TABLE Student (
           StuID    INTEGER PRIMARY KEY,
           ...
    )
    /*
    3 example rows from table Student:
    StuID | LName | Fname | ...
    1001 | Smith | Linda | ...
    */

Tables come in the order they were created (sqlite_master order), internal sqlite_* tables
excluded; the CREATE text is the database's own, so column types, keys and foreign keys are
as the authors wrote them. Long sample values are cut to `max_value_chars`. The database is
opened read-only through the same URI as the sandbox, via sqlite-utils.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from deepretrieval.sqlexec.sandbox import decode_text, readonly_uri


def _cell(value, max_value_chars: int) -> str:
    text = "NULL" if value is None else str(value)
    text = " ".join(text.split())  # keep one row on one line
    return text if len(text) <= max_value_chars else text[:max_value_chars] + "..."


def render_schema(db_path: str | Path, sample_rows: int = 0, max_value_chars: int = 60) -> str:
    """CREATE TABLE statements of `db_path`, each followed by `sample_rows` rows when > 0."""
    import sqlite_utils

    if not Path(db_path).is_file():
        raise FileNotFoundError(f"database file {db_path} does not exist")
    conn = sqlite3.connect(readonly_uri(db_path), uri=True)
    conn.text_factory = decode_text
    try:
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        blocks = []
        for name in db.table_names():
            if name.startswith("sqlite_"):
                continue
            table = db.table(name)
            block = table.schema.strip()
            if sample_rows > 0:
                columns = [c.name for c in table.columns]
                rows = [list(row.values()) for row in table.rows_where(limit=int(sample_rows))]
                lines = [f"{len(rows)} example {'row' if len(rows) == 1 else 'rows'} from table {name}:", " | ".join(columns)]
                lines += [" | ".join(_cell(v, max_value_chars) for v in row) for row in rows]
                block += "\n/*\n" + "\n".join(lines) + "\n*/"
            blocks.append(block)
        return "\n\n".join(blocks)
    finally:
        conn.close()

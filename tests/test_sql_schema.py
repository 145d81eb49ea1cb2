"""Schema rendering for prompts and the Spider loader, checked against Spider's tables.json."""
from __future__ import annotations

import json
import re

import pytest

from deepretrieval.sqlexec.datasets import load_examples, load_spider, load_spider_tables
from deepretrieval.sqlexec.schema import render_schema


def test_spider_loader(spider_dir):
    examples = load_spider(spider_dir)
    assert len(examples) == 1034 and [e.index for e in examples] == list(range(1034))
    assert examples[0].gold_sql == "SELECT count(*) FROM singer"
    assert examples[0].question == "How many singers do we have?"
    missing = {e.db_id for e in examples if e.missing_reason}
    assert missing == {"wta_1"} and sum(e.db_id == "wta_1" for e in examples) == 62
    assert len({e.db_id for e in examples if not e.missing_reason}) == 19
    assert load_examples(spider_dir, "spider") == examples


def test_create_statements_cover_every_table_of_tables_json(spider_dir):
    tables = load_spider_tables(spider_dir)
    dbs = sorted({e.db_id for e in load_spider(spider_dir) if not e.missing_reason})
    for db_id in dbs:
        text = render_schema(spider_dir / "database" / db_id / f"{db_id}.sqlite")
        created = re.findall(r'CREATE TABLE\s+(?:IF NOT EXISTS\s+)?["`\[\']?(\w+)', text, flags=re.IGNORECASE)
        # tables.json also lists sqlite's internal sqlite_sequence (world_1), which a prompt should not show
        expected = [n.lower() for n in tables[db_id]["table_names_original"] if not n.startswith("sqlite_")]
        assert sorted(n.lower() for n in created) == sorted(expected), db_id
        assert "example rows" not in text


def test_sample_rows(spider_dir):
    text = render_schema(spider_dir / "database" / "pets_1" / "pets_1.sqlite", sample_rows=2)
    assert text.startswith("CREATE TABLE Student (")
    assert ("/*\n2 example rows from table Student:\nStuID | LName | Fname | Age | Sex | Major | Advisor | city_code\n"
            "1001 | Smith | Linda | 18 | F | 600 | 1121 | BAL\n1002 | Kim | Tracy | 19 | F | 600 | 7712 | HKG\n*/") in text
    assert text.count("example rows from table") == 3
    assert "2002 | dog | 2 | 13.4" in text


def test_long_values_are_cut(spider_dir):
    text = render_schema(spider_dir / "database" / "world_1" / "world_1.sqlite", sample_rows=1, max_value_chars=5)
    assert "1 example row from table city:\nID | Name | CountryCode | District | Population\n" in text
    assert "\n1 | Kabul | AFG | Kabol | 17800...\n" in text  # 1780000 cut to 5 characters


def test_loader_errors_name_the_problem(tmp_path, spider_dir):
    with pytest.raises(FileNotFoundError, match="dev.json does not exist"):
        load_examples(tmp_path, "bird")
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "x", "question": "q", "SQL": "SELECT 1"}]))
    with pytest.raises(ValueError, match="entry 0 has no 'evidence' field"):
        load_examples(tmp_path, "bird")
    (tmp_path / "dev.json").write_text("[{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_examples(tmp_path, "bird")
    with pytest.raises(ValueError, match="unknown format 'wikisql'"):
        load_examples(spider_dir, "wikisql")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_schema(tmp_path / "none.sqlite")

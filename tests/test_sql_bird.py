"""A small BIRD-format folder (dev.json with evidence, dev_databases/<db>/<db>.sqlite), built here,
evaluated through the loader, the command line and BIRD's set-of-rows comparison."""
from __future__ import annotations

import json
import sqlite3

import pytest

from deepretrieval.cli import main
from deepretrieval.sqlexec.datasets import load_bird
from deepretrieval.sqlexec.outcome import evaluate_prediction

# (gold example, prediction, BIRD outcome)
CASES = [
    (dict(question="How many SME customers are there?", evidence="SME refers to Segment = 'SME'",
          SQL="SELECT COUNT(CustomerID) FROM customers WHERE Segment = 'SME'"),
     "SELECT count(*) FROM customers WHERE Segment = 'SME'", "match"),
    (dict(question="Names of the Czech customers?", evidence="Czech refers to Country = 'CZE'",
          SQL="SELECT Name FROM customers WHERE Country = 'CZE'"),
     "SELECT Name FROM customers WHERE Country = 'CZE' ORDER BY Name DESC", "match"),            # order ignored
    (dict(question="Countries with customers?", evidence="",
          SQL="SELECT DISTINCT Country FROM customers"),
     "SELECT Country FROM customers", "match"),                                                 # duplicates ignored
    (dict(question="Amount spent per customer in 2012?", evidence="in 2012 refers to Year = 2012",
          SQL="SELECT CustomerID, SUM(Amount) FROM orders WHERE Year = 2012 GROUP BY CustomerID"),
     "SELECT SUM(Amount), CustomerID FROM orders WHERE Year = 2012 GROUP BY CustomerID", "mismatch"),  # columns
    (dict(question="Who paid the most in one order?", evidence="the most refers to MAX(Amount)",
          SQL="SELECT T1.Name FROM customers AS T1 JOIN orders AS T2 ON T1.CustomerID = T2.CustomerID "
              "ORDER BY T2.Amount DESC LIMIT 1"),
     "SELECT Name FROM customers", "mismatch"),
    (dict(question="Names of LAM customers?", evidence="LAM refers to Segment = 'LAM'",
          SQL="SELECT Name FROM customers WHERE Segment = 'LAM'"),
     "SELECT Nmae FROM customers WHERE Segment = 'LAM'", "pred_error"),
    (dict(question="Total revenue?", evidence="", SQL="SELECT SUM(Revenue) FROM customers"),
     "SELECT SUM(Amount) FROM orders", "gold_error"),                                           # broken gold
    (dict(question="How many schools?", evidence="", SQL="SELECT COUNT(*) FROM schools", db_id="california_schools"),
     "SELECT COUNT(*) FROM schools", "skipped"),                                                # no database
]


def build_bird_mini(root):
    db_dir = root / "dev_databases" / "debit_card_mini"
    db_dir.mkdir(parents=True)
    conn = sqlite3.connect(db_dir / "debit_card_mini.sqlite")
    conn.executescript("""
        CREATE TABLE customers (CustomerID INTEGER PRIMARY KEY, Name TEXT, Segment TEXT, Country TEXT);
        CREATE TABLE orders (OrderID INTEGER PRIMARY KEY, CustomerID INTEGER REFERENCES customers, Year INTEGER,
                             Amount REAL);
        INSERT INTO customers VALUES (1, 'Ana', 'SME', 'CZE'), (2, 'Bo', 'LAM', 'CZE'), (3, 'Cy', 'SME', 'SVK'),
                                     (4, 'Di', 'KAM', 'CZE'), (5, 'Ed', 'SME', 'SVK');
        INSERT INTO orders VALUES (1, 1, 2012, 10.5), (2, 1, 2012, 4.5), (3, 2, 2012, 99.0), (4, 3, 2013, 7.25),
                                  (5, 4, 2012, 1.0);
    """)
    conn.commit()
    conn.close()
    entries = [{"question_id": i, "db_id": "debit_card_mini", "difficulty": "simple", **gold}
               for i, (gold, _, _) in enumerate(CASES)]
    (root / "dev.json").write_text(json.dumps(entries, indent=1))
    return root


@pytest.fixture
def bird_mini(tmp_path):
    return build_bird_mini(tmp_path / "bird_mini")


def test_loader_keeps_evidence_and_reports_the_missing_database(bird_mini):
    examples = load_bird(bird_mini)
    assert [e.evidence for e in examples[:2]] == ["SME refers to Segment = 'SME'", "Czech refers to Country = 'CZE'"]
    assert examples[3].gold_sql.startswith("SELECT CustomerID, SUM(Amount)")
    assert examples[0].db_path == bird_mini / "dev_databases" / "debit_card_mini" / "debit_card_mini.sqlite"
    assert [e.missing_reason is None for e in examples] == [True] * 7 + [False]
    assert "california_schools.sqlite" in examples[7].missing_reason


def test_cli_on_bird_mini(bird_mini, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"sql": pred}) + "\n" for _, pred, _ in CASES))
    details = tmp_path / "details.jsonl"
    assert main(["eval-sql", "--data", str(bird_mini), "--format", "bird", "--predictions", str(preds),
                 "--workers", "1", "--timeout", "5", "--details", str(details), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == pytest.approx(3 / 7)
    assert {k: summary[k] for k in ("total", "evaluated", "correct", "skipped", "match", "mismatch",
                                    "pred_error", "pred_timeout", "gold_error", "gold_timeout")} == {
        "total": 8, "evaluated": 7, "correct": 3, "skipped": 1, "match": 3, "mismatch": 2,
        "pred_error": 1, "pred_timeout": 0, "gold_error": 1, "gold_timeout": 0}
    statuses = [json.loads(line)["status"] for line in details.read_text().splitlines()]
    assert statuses == [expected for _, _, expected in CASES]


def test_spider_rule_differs_from_bird_on_the_same_rows(bird_mini):
    db = load_bird(bird_mini)[0].db_path
    (_, permuted, _), (_, with_duplicates, _) = CASES[3], CASES[2]
    assert evaluate_prediction(db, permuted, CASES[3][0]["SQL"], comparison="spider").correct
    assert not evaluate_prediction(db, permuted, CASES[3][0]["SQL"], comparison="bird").correct
    assert not evaluate_prediction(db, with_duplicates, CASES[2][0]["SQL"], comparison="spider").correct
    assert evaluate_prediction(db, with_duplicates, CASES[2][0]["SQL"], comparison="bird").correct

"""Outcomes of one prediction, parallel batches, and `deepretrieval eval-sql` on the Spider data."""
from __future__ import annotations

import json
import sqlite3

import pytest

from deepretrieval.cli import main
from deepretrieval.sqlexec.compare import gold_orders_rows, results_match
from deepretrieval.sqlexec.datasets import load_spider
from deepretrieval.sqlexec.outcome import STATUSES, Status, evaluate_prediction
from deepretrieval.sqlexec.pool import SqlItem, SqlPool, evaluate_batch
from deepretrieval.sqlexec.sandbox import decode_text, readonly_uri

INFINITE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture(scope="module")
def pets(spider_dir):
    return str(spider_dir / "database" / "pets_1" / "pets_1.sqlite")


def run_cli(capsys, *args) -> dict:
    assert main(["eval-sql", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("pred, status, message", [
    ("SELECT Fname, StuID FROM Student WHERE Age > 20", Status.MATCH, ""),     # columns swapped
    ("SELECT StuID, Fname FROM Student WHERE Age >= 20", Status.MISMATCH, ""),
    ("SELECT StuID, Fname FROM Students WHERE Age > 20", Status.PRED_ERROR, "no such table: Students"),
    ("DELETE FROM Student", Status.PRED_ERROR, "refused DELETE Student"),
    (INFINITE, Status.PRED_TIMEOUT, "1 s time limit"),
])
def test_prediction_outcomes(pets, pred, status, message):
    outcome = evaluate_prediction(pets, pred, "SELECT StuID, Fname FROM Student WHERE Age > 20", timeout_s=1.0)
    assert outcome.status is status
    assert message in outcome.message
    assert outcome.correct is (status is Status.MATCH)
    if status in (Status.MATCH, Status.MISMATCH):
        assert outcome.gold_rows == 7


@pytest.mark.parametrize("gold, status, message", [
    ("SELECT nope FROM Student", Status.GOLD_ERROR, "gold query: no such column: nope"),
    (INFINITE, Status.GOLD_TIMEOUT, "gold query: interrupted after the 1 s time limit"),
])
def test_gold_problems_are_reported_never_correct(pets, gold, status, message):
    # even when the prediction is the very same query (the original counts a double timeout correct)
    outcome = evaluate_prediction(pets, gold, gold, timeout_s=1.0)
    assert outcome.status is status and outcome.message == message
    assert not outcome.correct and outcome.gold_problem


def test_order_matters_only_with_top_level_order_by(pets):
    gold = "SELECT StuID FROM Student WHERE Age > 20 ORDER BY StuID"
    assert evaluate_prediction(pets, "SELECT StuID FROM Student WHERE Age > 20 ORDER BY 1", gold).correct
    assert evaluate_prediction(pets, gold + " DESC", gold).status is Status.MISMATCH
    assert evaluate_prediction(pets, gold + " DESC", gold, comparison="bird").correct
    unordered_gold = "SELECT StuID FROM Student WHERE Age > 20"
    assert evaluate_prediction(pets, gold + " DESC", unordered_gold).correct


def test_drop_distinct(pets):
    gold = "SELECT DISTINCT PetType FROM Pets"
    assert evaluate_prediction(pets, "SELECT PetType FROM Pets", gold).status is Status.MISMATCH  # 3 rows vs 2
    assert evaluate_prediction(pets, "SELECT PetType FROM Pets", gold, drop_distinct=True).correct
    assert evaluate_prediction(pets, "SELECT count(DISTINCT PetType) FROM Pets", "SELECT count(*) FROM Pets",
                               drop_distinct=True).correct  # the official rewrite reaches inside COUNT too


def test_parallel_batch_equals_serial(spider_dir, pets):
    examples = [e for e in load_spider(spider_dir) if e.db_id in ("pets_1", "singer")]
    items = [SqlItem(str(e.db_path), e.gold_sql, e.gold_sql) for e in examples]
    # mostly wrong predictions: the gold query two examples back (examples come in paraphrase pairs)
    items += [SqlItem(str(e.db_path), p.gold_sql, e.gold_sql) for p, e in zip(examples, examples[2:])]
    items += [SqlItem(pets, INFINITE, "SELECT 1"), SqlItem(pets, "SELECT 1", INFINITE), SqlItem(pets, "x", "SELECT 1")]
    serial = evaluate_batch(items, workers=1, timeout_s=1.0)
    parallel = evaluate_batch(items, workers=2, timeout_s=1.0)
    assert [o.status for o in parallel] == [o.status for o in serial]
    assert [o.message for o in parallel] == [o.message for o in serial]
    with SqlPool(workers=2) as pool:  # a kept pool (as a reward function holds one) serves batch after batch
        assert [o.status for o in pool.evaluate(items[:-3])] == [o.status for o in serial[:-3]]
        assert [o.status for o in pool.evaluate(items[::-1][3:])] == [o.status for o in serial[::-1][3:]]
    assert all(o.correct for o in serial[:len(examples)])
    assert [o.status.value for o in serial[-3:]] == ["pred_timeout", "gold_timeout", "pred_error"]
    shifted = [o.status.value for o in serial[len(examples):-3]]
    # 2 match by coincidence (both count 2 rows), 2 are pets queries run on the singer database
    assert (shifted.count("match"), shifted.count("mismatch"), shifted.count("pred_error")) == (2, 66, 2)


def test_cli_gold_on_spider_is_100_percent_and_reports_wta_1(spider_dir, capsys):
    summary = run_cli(capsys, "--data", str(spider_dir), "--format", "spider", "--gold", "--workers", "2")
    missing = str(spider_dir / "database" / "wta_1" / "wta_1.sqlite")
    assert summary == {
        "accuracy": 1.0, "total": 1034, "evaluated": 972, "correct": 972, "skipped": 62,
        "match": 972, "mismatch": 0, "pred_error": 0, "pred_timeout": 0, "gold_error": 0, "gold_timeout": 0,
        "skipped_reasons": {f"database file missing: {missing}": 62},
    }


def test_gold_float_sums_that_depend_on_scan_order(spider_dir):
    """Why `--gold` compares each gold query with itself on the same connection: 5 gold queries
    sum floats, and a different (equally valid) scan order changes the last bit, which the
    official exact comparison (followed here) would call a mismatch."""
    order_dependent = []
    for e in load_spider(spider_dir):
        if e.missing_reason:
            continue
        results = []
        for reverse in ("OFF", "ON"):
            conn = sqlite3.connect(readonly_uri(e.db_path), uri=True)
            conn.text_factory = decode_text
            conn.execute(f"PRAGMA reverse_unordered_selects = {reverse}")
            results.append(conn.execute(e.gold_sql).fetchall())
            conn.close()
        if not results_match(*results, order_matters=gold_orders_rows(e.gold_sql)):
            order_dependent.append((e.index, results[0][0][0], results[1][0][0]))
    assert [i for i, _, _ in order_dependent] == [117, 118, 425, 764, 765]
    assert order_dependent[2][1:] == (570.84, 570.8399999999999)
    assert all(a == pytest.approx(b, rel=1e-14) for _, a, b in order_dependent)


def test_cli_text_report(spider_dir, capsys):
    assert main(["eval-sql", "--data", str(spider_dir), "--format", "spider", "--gold", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "execution accuracy: 100.00% (972/972 evaluated; 1034 examples, 62 skipped)" in out
    assert "skipped 62: database file missing:" in out and "wta_1.sqlite" in out


def test_cli_predictions_files(spider_dir, tmp_path, capsys):
    examples = load_spider(spider_dir)
    preds = [e.gold_sql for e in examples]
    first = next(e.index for e in examples if e.missing_reason is None)
    preds[first] = "SELECT 42"                      # wrong result
    preds[first + 1] = "SELECT * FROM no_such_table"
    preds[first + 2] = ""                          # an empty line is an empty prediction, not dropped
    lines = tmp_path / "pred.sql"
    lines.write_text("\n".join(p.replace("\n", " ") + "\tdb" for p in preds) + "\n")
    summary = run_cli(capsys, "--data", str(spider_dir), "--format", "spider", "--predictions", str(lines),
                      "--workers", "1", "--details", str(tmp_path / "details.jsonl"))
    assert (summary["correct"], summary["mismatch"], summary["pred_error"], summary["skipped"]) == (969, 1, 2, 62)
    assert summary["accuracy"] == pytest.approx(969 / 972)
    details = [json.loads(line) for line in (tmp_path / "details.jsonl").read_text().splitlines()]
    assert len(details) == 1034 and details[first + 2]["message"] == "empty SQL"
    assert {d["status"] for d in details} == {"match", "mismatch", "pred_error", "skipped"}

    jsonl = tmp_path / "pred.jsonl"
    jsonl.write_text("".join(json.dumps({"sql": p, "db_id": e.db_id}) + "\n" for p, e in zip(preds, examples)))
    assert run_cli(capsys, "--data", str(spider_dir), "--format", "spider", "--predictions", str(jsonl),
                   "--workers", "1") == summary


def test_cli_rejects_misaligned_predictions(spider_dir, tmp_path):
    short = tmp_path / "short.sql"
    short.write_text("SELECT 1\n")
    with pytest.raises(SystemExit, match="has 1 predictions but the split has 1034 examples"):
        main(["eval-sql", "--data", str(spider_dir), "--format", "spider", "--predictions", str(short)])
    wrong_db = tmp_path / "wrong.jsonl"
    wrong_db.write_text(json.dumps({"sql": "SELECT 1", "db_id": "pets_1"}) + "\n" * 1 + "{}\n" * 1033)
    with pytest.raises(SystemExit, match="line 1 is for db_id 'pets_1'"):
        main(["eval-sql", "--data", str(spider_dir), "--format", "spider", "--predictions", str(wrong_db)])
    with pytest.raises(SystemExit, match="tables.json is missing"):
        main(["eval-sql", "--data", str(tmp_path), "--format", "spider", "--gold"])


def test_statuses_are_the_documented_six():
    assert STATUSES == ("match", "mismatch", "pred_error", "pred_timeout", "gold_error", "gold_timeout")

"""BEIR loader: SciFact as released (CRLF qrels), and unknown ids counted and reported."""
from __future__ import annotations

import json
import logging

import pytest

from deepretrieval.retrieval.beir import BeirFormatError, load_beir


def test_scifact_test_split(scifact_dir):
    ds = load_beir(scifact_dir, "test")
    assert (len(ds.doc_ids), len(ds.queries), ds.report.num_judgments) == (5183, 300, 339)
    assert ds.report.num_queries_in_file == 1109 and ds.report.clean
    assert ds.qrels["1"] == {"31715818": 1}                      # no '\r' left on ids or grades
    assert ds.doc_texts[0].startswith("Microstructural development of human newborn cerebral white matter")
    assert "\n" in ds.doc_texts[0]


def _write(folder, qrels_lines, crlf=True):
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "first"}) + "\n")
    end = "\r\n" if crlf else "\n"
    (folder / "qrels" / "test.tsv").write_bytes(end.join(["query-id\tcorpus-id\tscore", *qrels_lines, ""]).encode())


def test_unknown_ids_are_counted_and_reported(tmp_path, caplog):
    _write(tmp_path, ["q1\td1\t1", "q1\td9\t1", "q7\td2\t2", "q7\td8\t1"])
    with caplog.at_level(logging.WARNING):
        ds = load_beir(tmp_path, "test")
    r = ds.report
    assert (r.unknown_query_ids, r.num_unknown_query_judgments) == (["q7"], 2)
    assert (sorted(r.unknown_doc_ids), r.num_unknown_doc_judgments) == (["d8", "d9"], 2)
    assert ds.qrels == {"q1": {"d1": 1, "d9": 1}, "q7": {"d2": 2, "d8": 1}}   # judgments kept
    assert ds.queries == {"q1": "first"}                                     # q7 has no text
    assert "1 unknown query ids in 2 judgments (e.g. q7)" in str(r) and "2 unknown doc ids" in str(r)
    assert "unknown doc ids" in caplog.text
    assert ds.doc_texts == ["T1\none", "two"]
    with pytest.raises(BeirFormatError, match="unknown query ids"):
        load_beir(tmp_path, "test", strict=True)


def test_malformed_qrels_line_names_file_and_line(tmp_path):
    _write(tmp_path, ["q1\td1\t1", "q1 d2 x"], crlf=False)
    with pytest.raises(BeirFormatError, match=r"test.tsv:3: expected"):
        load_beir(tmp_path, "test")

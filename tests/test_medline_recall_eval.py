"""Recall@K evaluation of queries against any backend: offline MEDLINE and the PubMed client
(over the fake engine); values derived by hand."""
from __future__ import annotations

import json

import pytest

from fake_engines import engines  # noqa: F401  (fixture)
from deepretrieval.retrieval.http_client import RetryPolicy
from deepretrieval.retrieval.medline_backend import MedlineBackend
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.recall_eval import evaluate_recall, load_search_examples
from test_medline_backend import RECORDS


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def examples(tmp_path):
    pico = {"P": "adults after heart attack", "I": "aspirin", "C": "placebo", "O": "mortality"}
    return load_search_examples(write_jsonl(tmp_path / "reviews.jsonl", [
        {"id": "r1", "pico": pico, "publication_pmids": ["1", "6"], "pub_date": "2011-01-01"},
        {"pico": pico, "publication_pmids": "3, 4", "pub_date": ""},
        {"pico": pico, "trial_nctids": ["5"]},
    ]))


def test_loads_the_paper_format(examples):
    assert [e.id for e in examples] == ["r1", "2", "3"]
    assert examples[0].relevant == ("1", "6") and examples[0].pub_date == "2011-01-01"
    assert examples[1].relevant == ("3", "4") and examples[1].pub_date is None
    assert examples[0].pico["I"] == "aspirin"


def test_recall_on_the_offline_backend(examples):
    backend = MedlineBackend(RECORDS)
    queries = ["aspirin",               # matches 1 (2010) and 6 (2009), both before 2011: 2/2
               "neoplasms[mh] NOT mice[mh]",   # matches 4 only: 1/2
               '"heart attack']        # a parse error: 0, with the message kept
    report = evaluate_recall(examples, queries, backend, k=10, progress=False)
    assert report.per_query == [1.0, 0.5, 0.0] and report.mean == pytest.approx(0.5)
    assert report.errors[:2] == [None, None] and "unterminated" in report.errors[2]
    assert report.failed == 1


def test_date_limit_and_k(tmp_path):
    backend = MedlineBackend(RECORDS)
    ex = load_search_examples(write_jsonl(tmp_path / "r.jsonl", [
        {"pico": {}, "publication_pmids": ["1", "6"], "pub_date": "2009-12-31"}]))
    assert evaluate_recall(ex, ["aspirin"], backend, progress=False).per_query == [0.5]
    assert evaluate_recall(ex, ["aspirin"], backend, use_date=False, progress=False).per_query == [1.0]
    assert evaluate_recall(ex, ["aspirin"], backend, k=1, use_date=False, progress=False).per_query == [0.5]


def test_recall_through_the_pubmed_client(engines, tmp_path):
    client = PubMedClient(engines.eutils_url, page_size=5, limiter=RateLimiter(tmp_path / "rl", 1000),
                          retry=RetryPolicy(2, 0.01, 0.05))
    ex = load_search_examples(write_jsonl(tmp_path / "r.jsonl", [
        {"pico": {}, "publication_pmids": ["42286391", "42286177", "1"], "pub_date": "2025/01/01"},
        {"pico": {}, "publication_pmids": ["41884867"]}]))
    engines.faults.extend(["400"])      # the first request fails for good: that query scores 0
    report = evaluate_recall(ex, ["artificial intelligence radiology"] * 2, client, k=5, progress=False)
    assert report.per_query == [0.0, 0.0] and "HTTP 400" in report.errors[0]
    report = evaluate_recall(ex, ["artificial intelligence radiology", "attention mechanism"], client,
                             k=5, workers=2, progress=False)
    assert report.per_query == [pytest.approx(2 / 3), 1.0] and report.errors == [None, None]
    assert sorted(r.params.get("maxdate", "-") for r in engines.requests[-2:]) == ["-", "2025/01/01"]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"r.jsonl:1: needs one of"):
        load_search_examples(write_jsonl(tmp_path / "r.jsonl", [{"pico": {}}]))
    with pytest.raises(ValueError, match=r"r.jsonl:2: no relevant ids"):
        load_search_examples(write_jsonl(tmp_path / "r.jsonl", [
            {"publication_pmids": ["1"]}, {"publication_pmids": []}]))
    with pytest.raises(ValueError, match="2 queries for 1 examples"):
        evaluate_recall(load_search_examples(write_jsonl(tmp_path / "r.jsonl", [{"trial_nctids": "N1"}])),
                        ["a", "b"], MedlineBackend(RECORDS))

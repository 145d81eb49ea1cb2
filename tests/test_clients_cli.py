"""`deepretrieval search`: each engine once, end to end (web engines via the loopback fake)."""
from __future__ import annotations

import json

import pytest

from deepretrieval.cli import main
from fake_engines import engines  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))    # the default rate-limit files
    monkeypatch.delenv("NCBI_API_KEY", raising=False)


def run_json(capsys, *argv) -> dict:
    assert main(["search", *argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_medline(capsys):
    rec = run_json(capsys, "medline", "asthma[tiab] AND (budesonide OR formoterol)")
    assert rec["ids"] == ["29768149"] and rec["total"] == 1 and rec["corpus_size"] == 2399


def test_pubmed_with_cache(engines, capsys, tmp_path):
    argv = ["pubmed", "artificial intelligence radiology", "--max", "5", "--base-url", engines.eutils_url,
            "--cache", str(tmp_path / "c.sqlite")]
    rec = run_json(capsys, *argv)
    assert rec["ids"][:2] == ["42286391", "42286351"] and rec["total"] == 42111 and rec["requests"] == 1
    rec = run_json(capsys, *argv)
    assert rec["requests"] == 0 and rec["cache_hits"] == 1 and len(engines.requests) == 1


def test_ctgov_params(engines, capsys):
    rec = run_json(capsys, "ctgov", "", "--param", "query.cond=Phelan-McDermid Syndrome", "--max", "50",
                   "--base-url", engines.ctgov_url, "--no-cache")
    assert rec["ids"] == ["NCT02710084", "NCT05105685", "NCT01525901"] and rec["total"] == 3


def test_saved_index(capsys, tmp_path):
    from deepretrieval.retrieval.analyzer import Analyzer
    from deepretrieval.retrieval.bm25 import BM25Index
    BM25Index.build(["a", "b"], ["aspirin for heart attack", "tumour growth"], Analyzer(),
                    show_progress=False).save(tmp_path / "idx")
    rec = run_json(capsys, "--index", str(tmp_path / "idx"), "heart")
    assert rec["kind"] == "bm25" and [h[0] for h in rec["hits"]] == ["a"]


@pytest.mark.parametrize("argv, message", [
    (["medline", "asthma AND"], "search: medline failed: AND needs a term after it"),
    (["bing", "asthma"], "search: give an engine"),
    (["medline", "asthma", "--max-date", "May 2018"], "cannot read date"),
    (["--index", "/nonexistent/idx", "q"], "search: "),
])
def test_user_errors_are_one_line(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["search", *argv])

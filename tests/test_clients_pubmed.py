"""PubMed esearch client against the loopback fake serving real recorded esearch answers."""
from __future__ import annotations

import json

import pytest

from fake_engines import ESEARCH_TERMS, engines, esearch_universe  # noqa: F401  (engines: fixture)
from deepretrieval.retrieval.http_client import EngineError, RetryPolicy
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.search_backend import SearchError

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)
AI_RADIOLOGY = "artificial intelligence radiology"


@pytest.fixture
def make_client(engines, tmp_path, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    monkeypatch.delenv("NCBI_EMAIL", raising=False)

    def make(**kw):
        kw.setdefault("limiter", RateLimiter(tmp_path / "rl", 1000))
        return PubMedClient(engines.eutils_url, retry=FAST_RETRY, **kw)
    return make


def test_recorded_answer_ids_in_order(engines, make_client, api_fixtures_dir):
    result = make_client(page_size=5).search_full(AI_RADIOLOGY, max_results=5)
    assert result.ids == ["42286391", "42286351", "42286322", "42286178", "42286177"]
    assert result.count == 42111 and not result.truncated
    (req,) = engines.requests
    assert req.path == "/entrez/eutils/esearch.fcgi"
    assert req.params == {"db": "pubmed", "term": AI_RADIOLOGY, "retmode": "json", "retstart": "0",
                          "retmax": "5", "tool": "deepretrieval"}


def test_pages_to_the_requested_depth(engines, make_client, api_fixtures_dir):
    recorded = json.loads((api_fixtures_dir / "ncbi_esearch" / ESEARCH_TERMS[AI_RADIOLOGY]).read_bytes())
    ids = make_client(page_size=5).search(AI_RADIOLOGY, max_results=12)
    assert ids == esearch_universe(recorded)[:12]
    assert ids[:5] == recorded["esearchresult"]["idlist"]
    assert [(r.params["retstart"], r.params["retmax"]) for r in engines.requests] == \
        [("0", "5"), ("5", "5"), ("10", "2")]


def test_default_depth_is_3000_in_one_request(engines, make_client):
    ids = make_client().search("attention mechanism")
    assert len(ids) == 3000 and len(set(ids)) == 3000 and ids[:3] == ["41884867", "41884779", "41884685"]
    assert [(r.params["retstart"], r.params["retmax"]) for r in engines.requests] == [("0", "3000")]


def test_retstart_ceiling(engines, make_client):
    result = make_client(page_size=5000).search_full("attention mechanism", max_results=25_000)
    assert result.truncated and result.count == 115258
    assert len(result.ids) == 9_999 and len(set(result.ids)) == 9_999
    assert [(r.params["retstart"], r.params["retmax"]) for r in engines.requests] == \
        [("0", "5000"), ("5000", "4999")]   # the last retstart allowed is 9,998


def test_depth_stops_at_count(engines, make_client):
    assert make_client().search("no such term anywhere", max_results=3000) == []
    assert len(engines.requests) == 1


def test_date_limit_params(engines, make_client):
    client = make_client()
    client.search(AI_RADIOLOGY, max_results=5, max_date="2018-05-17")
    client.search(AI_RADIOLOGY, max_results=5, max_date="2018")
    client.count(AI_RADIOLOGY, min_date="2001/02", max_date="20040229")
    got = [(r.params["datetype"], r.params["mindate"], r.params["maxdate"]) for r in engines.requests]
    assert got == [("pdat", "1700/01/01", "2018/05/17"), ("pdat", "1700/01/01", "2018/12/31"),
                   ("pdat", "2001/02/01", "2004/02/29")]
    assert engines.requests[-1].params["retmax"] == "0"


def test_api_key_email_and_rate_from_environment(engines, tmp_path, monkeypatch):
    monkeypatch.setenv("NCBI_API_KEY", "k3y")
    monkeypatch.setenv("NCBI_EMAIL", "me@example.org")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))   # keep the default limiter file in tmp
    client = PubMedClient(engines.eutils_url)
    assert client.http.limiter.max_requests == 10
    client.search(AI_RADIOLOGY, max_results=5)
    assert engines.requests[0].params["api_key"] == "k3y"
    assert engines.requests[0].params["email"] == "me@example.org"
    engines.faults.append("400")
    with pytest.raises(SearchError) as info:        # the key never appears in an error message
        client.search("attention mechanism", max_results=5)
    assert "api_key=***" in str(info.value) and "k3y" not in str(info.value)
    monkeypatch.delenv("NCBI_API_KEY")
    assert PubMedClient(engines.eutils_url).http.limiter.max_requests == 3


def test_ncbi_error_field_about_the_query_is_not_retried(engines, make_client):
    engines.faults.append("ncbi_error:Invalid query syntax near ')'")
    with pytest.raises(EngineError, match=r"NCBI esearch ERROR: Invalid query syntax near '\)'"):
        make_client().search(AI_RADIOLOGY, max_results=5)
    assert len(engines.requests) == 1


def test_retstart_error_is_not_retried(engines, make_client):
    # NCBI's answer to retstart > 9998 (the fake gives it too) says "Search Backend failed" but
    # is about the request, so it must not be retried.
    client = make_client()
    with pytest.raises(EngineError, match="'retstart' cannot be larger than 9998"):
        client._esearch("attention mechanism", 9999, 10, None, None)
    assert len(engines.requests) == 1


def test_ncbi_backend_error_is_retried(engines, make_client):
    engines.faults.append("ncbi_error:Search Backend failed: Couldn't resolve #exec_pool")
    client = make_client(page_size=5)
    assert client.search(AI_RADIOLOGY, max_results=5)[0] == "42286391"
    assert len(engines.requests) == 2 and client.http.stats["retries"] == 1


def test_rejects_bad_arguments(make_client):
    with pytest.raises(ValueError, match="empty PubMed query"):
        make_client().search("   ")
    with pytest.raises(ValueError, match="page_size"):
        make_client(page_size=20_000)
    with pytest.raises(ValueError, match="cannot read date"):
        make_client().search(AI_RADIOLOGY, max_date="May 2018")

"""ClinicalTrials.gov v2 client against the loopback fake serving real recorded pages."""
from __future__ import annotations

import json

import pytest

from fake_engines import CTGOV_FIRST_PAGES, engines  # noqa: F401  (engines: fixture)
from deepretrieval.retrieval.ctgov import ClinicalTrialsClient
from deepretrieval.retrieval.http_client import MalformedResponse, RetryPolicy
from deepretrieval.retrieval.rate_limit import RateLimiter

PHELAN = {"query.cond": "Phelan-McDermid Syndrome"}


def recorded_ids(api_fixtures_dir, name):
    page = json.loads((api_fixtures_dir / "ctgov_v2_studies" / name).read_bytes())
    return [s["protocolSection"]["identificationModule"]["nctId"] for s in page["studies"]], page


@pytest.fixture
def make_client(engines, tmp_path):
    def make(**kw):
        return ClinicalTrialsClient(engines.ctgov_url, limiter=RateLimiter(tmp_path / "rl", 1000),
                                    retry=RetryPolicy(3, 0.01, 0.05), **kw)
    return make


def test_pages_by_next_page_token(engines, make_client, api_fixtures_dir):
    first, first_page = recorded_ids(api_fixtures_dir, "search_phelan_limit5_20260811.json")
    second, _ = recorded_ids(api_fixtures_dir, "search_phelan_next_20260811.json")
    result = make_client(page_size=5).search_full("", max_results=10, params=PHELAN)
    assert result.ids == first + second
    assert result.ids[:3] == ["NCT02710084", "NCT05105685", "NCT01525901"] and result.ids[-1] == "NCT07281079"
    assert result.total == 21
    r1, r2 = engines.requests
    assert r1.path == "/api/v2/studies"
    assert r1.params == {"format": "json", "fields": "NCTId", "query.cond": "Phelan-McDermid Syndrome",
                         "pageSize": "5", "countTotal": "true"}
    assert r2.params["pageToken"] == first_page["nextPageToken"] and "countTotal" not in r2.params
    assert r2.params["pageSize"] == "5" and r2.params["query.cond"] == "Phelan-McDermid Syndrome"


def test_last_page_cut_to_depth(engines, make_client):
    ids = make_client(page_size=5).search_full("", max_results=7, params=PHELAN).ids
    assert ids == ["NCT02710084", "NCT05105685", "NCT01525901", "NCT03493607", "NCT07119606",
                   "NCT05187377", "NCT03836300"]
    assert len(engines.requests) == 2


def test_stops_without_next_page(engines, make_client):
    result = make_client(page_size=50).search_full("", max_results=3000, params=PHELAN)
    assert result.ids == ["NCT02710084", "NCT05105685", "NCT01525901"] and result.total == 3
    assert len(engines.requests) == 1


def test_filters_and_depth_reached_on_first_page(engines, make_client):
    params = {"query.cond": "melanoma", "filter.overallStatus": "RECRUITING"}
    result = make_client().search_full("", max_results=3, params=params)
    assert result.ids == ["NCT06970236", "NCT04114136", "NCT04318717"] and result.total == 480
    assert len(engines.requests) == 1 and engines.requests[0].params["pageSize"] == "3"


def test_query_term_with_quotes_and_brackets_reaches_server(engines, make_client):
    fixture_params, size = CTGOV_FIRST_PAGES["search_nsclc_egfr_l858r_20260811.json"]
    term = fixture_params["query.term"]
    result = make_client(page_size=size).search_full(
        term, max_results=50, params={"query.cond": fixture_params["query.cond"]})
    assert result.ids == ["NCT06382129", "NCT06604689"] and result.total == 2
    assert engines.requests[0].params["query.term"] == term


def test_max_date_becomes_advanced_filter(engines, make_client):
    client = make_client()
    client.search("melanoma", max_results=10, max_date="2019-05-04")
    client.search_full("melanoma", 10, max_date="2019",
                       params={"filter.advanced": "AREA[Phase]PHASE3"})
    assert engines.requests[0].params["filter.advanced"] == "AREA[StudyFirstPostDate]RANGE[MIN,2019-05-04]"
    assert engines.requests[1].params["filter.advanced"] == \
        "(AREA[Phase]PHASE3) AND AREA[StudyFirstPostDate]RANGE[MIN,2019-12-31]"
    assert engines.requests[0].params["query.term"] == "melanoma"


def test_malformed_page_raises(engines, make_client):
    engines.faults.extend(["malformed"] * 3)
    with pytest.raises(MalformedResponse, match="malformed JSON.*gave up after 3 attempts"):
        make_client(page_size=5).search_full("", 10, params=PHELAN)
    assert len(engines.requests) == 3


def test_rejects_unknown_params_and_empty_search(make_client):
    with pytest.raises(ValueError, match="unsupported ClinicalTrials.gov parameter 'term'"):
        make_client().search_full("x", params={"term": "y"})
    with pytest.raises(ValueError, match="empty ClinicalTrials.gov search"):
        make_client().search("  ")

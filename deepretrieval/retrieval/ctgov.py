"""ClinicalTrials.gov API v2 search: the engine of the paper's trial-search task.

    client = ClinicalTrialsClient(cache="~/.cache/deepretrieval/search.sqlite")
    client.search('"EGFR L858R" AND erlotinib', max_results=3000, max_date="2019-05-04")
    client.search_full("", 100, params={"query.cond": "melanoma",
                                        "filter.overallStatus": "RECRUITING"}).total

Requests: `GET /api/v2/studies?query.term=...&fields=NCTId&pageSize=...&countTotal=true`, any other
`query.*` / `filter.*` / `postFilter.*` parameter passed through `params`, then the same request
with `pageToken=<nextPageToken>` until the requested depth (default 3,000) is reached or the
engine has no next page. `fields=NCTId` keeps each page to the ids (a full study record is tens of
kilobytes). The API gives `totalCount` only on the first page, when asked with countTotal=true.
The page size stays the same on every page (at most 1,000, the API's limit) and the last page is
cut to the depth.

A date limit (`max_date`, the review's date in the paper's setup) becomes
`filter.advanced=AREA[StudyFirstPostDate]RANGE[MIN,YYYY-MM-DD]`, ANDed with any `filter.advanced`
of the caller; the date field is a constructor argument.

Rate: ClinicalTrials.gov asks for about 50 requests per minute per IP; the default limiter enforces
that for every thread and process of the user (one `RateLimiter` file per service).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from deepretrieval.retrieval.http_client import (CONNECT_TIMEOUT, READ_TIMEOUT, TOTAL_TIMEOUT, HttpClient,
                                                 MalformedResponse, RetryPolicy)
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.request_cache import RequestCache
from deepretrieval.retrieval.search_backend import DateLike, parse_date

CTGOV_URL = "https://clinicaltrials.gov/api/v2/"
MAX_PAGE_SIZE = 1000
_PARAM_PREFIXES = ("query.", "filter.", "postFilter.")
_PLAIN_PARAMS = frozenset({"sort", "aggFilters", "geoDecay"})


@dataclass(frozen=True)
class TrialSearchResult:
    ids: list[str]          # NCT ids in the engine's order, at most the requested depth
    total: int              # the engine's totalCount


def _check_page(data, url: str) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("studies"), list):
        raise MalformedResponse(f"no 'studies' list in the answer: {str(data)[:120]!r}", url)
    for study in data["studies"]:
        try:
            nct = study["protocolSection"]["identificationModule"]["nctId"]
        except (KeyError, TypeError):
            nct = None
        if not isinstance(nct, str):
            raise MalformedResponse(f"a study without protocolSection.identificationModule.nctId: "
                                    f"{str(study)[:120]!r}", url)
    if "nextPageToken" in data and not isinstance(data["nextPageToken"], str):
        raise MalformedResponse(f"nextPageToken is not a string: {data['nextPageToken']!r}", url)


class ClinicalTrialsClient:
    """CTGov v2 client; `search` implements `deepretrieval.retrieval.search_backend.SearchBackend`."""

    def __init__(self, base_url: str = CTGOV_URL, *,
                 cache: RequestCache | str | os.PathLike | None = None,
                 limiter: RateLimiter | None = None, page_size: int = MAX_PAGE_SIZE,
                 date_field: str = "StudyFirstPostDate", retry: RetryPolicy = RetryPolicy(),
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 total_timeout: float = TOTAL_TIMEOUT):
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        self.page_size = page_size
        self.date_field = date_field
        if limiter is None:
            limiter = RateLimiter.for_service("ctgov", 50, period=60.0)
        if cache is not None and not isinstance(cache, RequestCache):
            cache = RequestCache(cache)
        self.http = HttpClient(base_url, limiter=limiter, cache=cache, retry=retry,
                               connect_timeout=connect_timeout, read_timeout=read_timeout,
                               total_timeout=total_timeout)

    def _base_params(self, query: str, max_date, params: dict | None) -> dict:
        extra = dict(params or {})
        for name in extra:
            if not (name.startswith(_PARAM_PREFIXES) or name in _PLAIN_PARAMS):
                raise ValueError(f"unsupported ClinicalTrials.gov parameter {name!r}: use query.*, "
                                 f"filter.*, postFilter.* or one of {sorted(_PLAIN_PARAMS)}")
        if query.strip():
            extra["query.term"] = query
        if not any(name.startswith(("query.", "filter.")) for name in extra):
            raise ValueError("empty ClinicalTrials.gov search: give a query or a query.*/filter.* param")
        if max_date is not None:
            limit = f"AREA[{self.date_field}]RANGE[MIN,{parse_date(max_date, end=True).isoformat()}]"
            old = extra.get("filter.advanced")
            extra["filter.advanced"] = f"({old}) AND {limit}" if old else limit
        return {"format": "json", "fields": "NCTId", **extra}

    def search_full(self, query: str, max_results: int = 3000, max_date: DateLike | None = None,
                    params: dict | None = None) -> TrialSearchResult:
        base = self._base_params(query, max_date, params)
        page_size = max(1, min(self.page_size, max_results))
        ids: list[str] = []
        seen: set[str] = set()
        token = None
        total = None
        while len(ids) < max_results:
            request = {**base, "pageSize": page_size}
            if token is None:
                request["countTotal"] = "true"
            else:
                request["pageToken"] = token
            page = self.http.get_json("studies", request, validate=_check_page)
            if token is None:
                if not isinstance(page.get("totalCount"), int):
                    raise MalformedResponse("first page lacks totalCount although countTotal=true",
                                            self.http.base_url + "studies")
                total = page["totalCount"]
            for study in page["studies"]:
                nct = study["protocolSection"]["identificationModule"]["nctId"]
                if nct not in seen:
                    seen.add(nct)
                    ids.append(nct)
            token = page.get("nextPageToken")
            if not token or not page["studies"]:
                break
        return TrialSearchResult(ids=ids[:max_results], total=total)

    def search(self, query: str, max_results: int = 3000, max_date: DateLike | None = None) -> list[str]:
        return self.search_full(query, max_results, max_date=max_date).ids

"""PubMed search through NCBI E-utilities esearch: the engine of the paper's literature-search task.

    client = PubMedClient(cache="~/.cache/deepretrieval/search.sqlite")
    client.search('(asthma[tiab] OR "wheezing") AND budesonide', max_results=3000, max_date="2018/05/17")
    client.search_full(term, 3000).count        # how many PubMed has in all
    client.count(term)                          # only the count (one request, retmax=0)

Requests: `esearch.fcgi?db=pubmed&retmode=json&term=...` with the term percent-encoded (quotes,
brackets, #, & and non-ASCII arrive as typed), `datetype=pdat&mindate=...&maxdate=...` when a
date limit is given (NCBI needs both ends, so a lone `max_date` gets mindate 1700/01/01), and
`tool`/`email` (and `api_key` from `NCBI_API_KEY`) as NCBI asks of E-utilities users. A request
whose URL would exceed 2,000 characters (long rewritten queries) is sent as a POST instead.

Paging: the first page (`retstart=0`) brings the total count with it, so we never spend a request
on the count alone; further pages of `page_size` ids follow until the requested depth (default
3,000, the paper's Recall@3000) or the count is reached. The "10,000 ceiling": for PubMed,
esearch serves only the first 9,999 records of a search (a `retstart` above 9,998 gets an ERROR:
"ESearch can only retrieve the first 9,999 records matching the query"), so a deeper request is
cut to 9,999 and `PubMedResult.truncated` says so. Pages are concatenated in order with
duplicates dropped (a record added between two page requests can shift the next page by one).

Rate: one `RateLimiter` per service and rate, shared by all threads and processes of the user:
3 requests/s without an API key, 10 with one (NCBI's limits).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from deepretrieval.retrieval.http_client import (CONNECT_TIMEOUT, READ_TIMEOUT, TOTAL_TIMEOUT, EngineError,
                                                 HttpClient, MalformedResponse, RetryPolicy)
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.request_cache import RequestCache
from deepretrieval.retrieval.search_backend import DateLike, parse_date

log = logging.getLogger(__name__)

EUTILS_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
MAX_RECORDS = 9_999              # esearch serves at most the first 9,999 records (retstart <= 9,998)
MAX_RETMAX = 10_000              # NCBI's largest retmax for esearch
POST_OVER = 2_000                # longer URLs go as POST, as NCBI recommends for long terms
EARLIEST_DATE = "1700/01/01"     # before any PubMed record; the lower end of a max-date-only limit
# NCBI's own transient failures come back as a 200 with an ERROR field; these words mark them,
# unless the message is about the request itself (NCBI wraps some of those in "Search Backend
# failed" too, e.g. "'retstart' cannot be larger than 9998").
_TRANSIENT_ERRORS = ("backend", "temporar", "try again", "rate limit", "timeout", "unavailable")
_REQUEST_ERRORS = ("cannot be", "invalid", "syntax", "too long", "not allowed")


def _transient(message: str) -> bool:
    message = message.lower()
    return any(w in message for w in _TRANSIENT_ERRORS) and not any(w in message for w in _REQUEST_ERRORS)


@dataclass(frozen=True)
class PubMedResult:
    ids: list[str]          # PMIDs in the engine's order, at most the requested depth
    count: int              # all matching records, as esearch reports
    truncated: bool         # the requested depth was beyond the 9,999 that esearch serves


def _check_esearch(data, url: str) -> None:
    """Raises for anything but a well-formed esearch answer with a count and an id list."""
    if isinstance(data, dict) and "error" in data:          # e.g. {"error": "API rate limit exceeded"}
        msg = str(data["error"])
        raise EngineError(f"NCBI error: {msg}", url, retryable=_transient(msg))
    result = data.get("esearchresult") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise MalformedResponse(f"no 'esearchresult' object in the answer: {str(data)[:120]!r}", url)
    if "ERROR" in result:
        msg = str(result["ERROR"])
        raise EngineError(f"NCBI esearch ERROR: {msg}", url, retryable=_transient(msg))
    if not str(result.get("count", "")).isdigit() or not isinstance(result.get("idlist"), list):
        raise MalformedResponse(f"esearchresult lacks a numeric 'count' or an 'idlist': "
                                f"{str(result)[:120]!r}", url)


class PubMedClient:
    """esearch client; `search` implements `deepretrieval.retrieval.search_backend.SearchBackend`."""

    def __init__(self, base_url: str = EUTILS_URL, *, db: str = "pubmed", api_key: str | None = None,
                 email: str | None = None, tool: str = "deepretrieval",
                 cache: RequestCache | str | os.PathLike | None = None,
                 limiter: RateLimiter | None = None, page_size: int = 5_000,
                 sort: str | None = None, retry: RetryPolicy = RetryPolicy(),
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 total_timeout: float = TOTAL_TIMEOUT):
        if not 1 <= page_size <= MAX_RETMAX:
            raise ValueError(f"page_size must be 1..{MAX_RETMAX}, got {page_size}")
        self.db = db
        self.api_key = api_key if api_key is not None else os.environ.get("NCBI_API_KEY") or None
        self.email = email if email is not None else os.environ.get("NCBI_EMAIL") or None
        self.tool = tool
        self.page_size = page_size
        self.sort = sort            # None: the engine's default order (what the paper used)
        if limiter is None:
            limiter = RateLimiter.for_service("ncbi", 10 if self.api_key else 3)
        if cache is not None and not isinstance(cache, RequestCache):
            cache = RequestCache(cache)
        self.http = HttpClient(base_url, limiter=limiter, cache=cache, retry=retry,
                               connect_timeout=connect_timeout, read_timeout=read_timeout,
                               total_timeout=total_timeout, post_over=POST_OVER)

    def _params(self, term: str, retstart: int, retmax: int, min_date, max_date) -> dict:
        params = {"db": self.db, "term": term, "retmode": "json", "retstart": retstart,
                  "retmax": retmax, "sort": self.sort, "tool": self.tool, "email": self.email,
                  "api_key": self.api_key}
        if min_date is not None or max_date is not None:
            params["datetype"] = "pdat"
            params["mindate"] = parse_date(min_date).strftime("%Y/%m/%d") if min_date is not None \
                else EARLIEST_DATE
            params["maxdate"] = parse_date(max_date, end=True).strftime("%Y/%m/%d") \
                if max_date is not None else "3000/12/31"
        return params

    def _esearch(self, term, retstart, retmax, min_date, max_date) -> dict:
        params = self._params(term, retstart, retmax, min_date, max_date)
        return self.http.get_json("esearch.fcgi", params, validate=_check_esearch)["esearchresult"]

    def count(self, query: str, min_date: DateLike | None = None, max_date: DateLike | None = None) -> int:
        return int(self._esearch(query, 0, 0, min_date, max_date)["count"])

    def search_full(self, query: str, max_results: int = 3000, min_date: DateLike | None = None,
                    max_date: DateLike | None = None) -> PubMedResult:
        if not query.strip():
            raise ValueError("empty PubMed query")
        depth = min(max_results, MAX_RECORDS)
        truncated = max_results > MAX_RECORDS
        if truncated:
            log.warning("esearch serves only the first %d records; depth %d cut to that",
                        MAX_RECORDS, max_results)
        first = self._esearch(query, 0, min(self.page_size, depth), min_date, max_date)
        count = int(first["count"])
        ids = list(dict.fromkeys(first["idlist"]))
        seen = set(ids)
        retstart = min(self.page_size, depth)
        depth = min(depth, count)
        while retstart < depth:
            page = self._esearch(query, retstart, min(self.page_size, depth - retstart), min_date, max_date)
            if not page["idlist"]:
                break   # the count shrank between requests: nothing more to fetch
            for pmid in page["idlist"]:
                if pmid not in seen:
                    seen.add(pmid)
                    ids.append(pmid)
            retstart += self.page_size
        return PubMedResult(ids=ids[:depth], count=count, truncated=truncated and count > MAX_RECORDS)

    def search(self, query: str, max_results: int = 3000, max_date: DateLike | None = None) -> list[str]:
        return self.search_full(query, max_results, max_date=max_date).ids

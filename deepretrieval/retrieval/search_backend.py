"""What every literature / trial search backend offers the reward code, and the date limits they share.

    backend.search("asthma[tiab] AND budesonide", max_results=3000, max_date="2018/05/17")
    # -> ["29768149", ...]   ids, best first, at most max_results

Implemented by `PubMedClient` (esearch), `ClinicalTrialsClient` (CTGov v2) and `MedlineBackend`
(offline). `search` raises `SearchError` (defined here) when the search fails: the web clients'
HTTP and answer errors (`deepretrieval.retrieval.http_client`) and the offline parser's `QueryParseError` are
all subclasses, so the reward code catches `SearchError` alone and turns it into the paper's
penalty.

Dates: the paper limits each search to what was published up to the review's date. A date may be
a `datetime.date` or a string "YYYY", "YYYY/MM", "YYYY/MM/DD" (also with "-" or nothing between
the parts: "2019-05-04", "20190504"); a partial date means its first day as a lower bound and its
last day as an upper bound.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Protocol, runtime_checkable

DateLike = dt.date | str

_SECRET_PARAM = re.compile(r"((?:^|[?&])api_key=)[^&]*")
_DATE = re.compile(r"^(\d{4})(?:[-/.]?(\d{1,2}))?(?:[-/.]?(\d{1,2}))?$")


class SearchError(Exception):
    """A search that failed: an engine error, a bad answer, or a query the engine cannot run.
    The message says what was wrong (and the URL, for web engines); `retryable` says whether
    trying the same request again may help."""

    retryable = False

    def __init__(self, message: str, url: str = ""):
        url = _SECRET_PARAM.sub(r"\1***", url)    # messages end up in logs: never show a key
        shown = url if len(url) <= 500 else url[:500] + f"... ({len(url)} characters)"
        super().__init__(f"{message} [{shown}]" if url else message)
        self.url = url


@runtime_checkable
class SearchBackend(Protocol):
    def search(self, query: str, max_results: int = 3000, max_date: DateLike | None = None) -> list[str]:
        """Ids of the documents the engine returns for `query`, best first, at most `max_results`."""


def parse_date(value: DateLike, end: bool = False) -> dt.date:
    """A date from a date or a string; `end=True` takes the last day of a partial date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    m = _DATE.match(str(value).strip())
    if not m:
        raise ValueError(f"cannot read date {value!r}: use YYYY, YYYY/MM or YYYY/MM/DD")
    year = int(m.group(1))
    month = int(m.group(2)) if m.group(2) else (12 if end else 1)
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range in date {value!r}")
    last = calendar.monthrange(year, month)[1]
    day = int(m.group(3)) if m.group(3) else (last if end else 1)
    if not 1 <= day <= last:
        raise ValueError(f"day {day} out of range in date {value!r}")
    return dt.date(year, month, day)

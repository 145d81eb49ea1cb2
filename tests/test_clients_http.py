"""Shared HTTP plumbing: retries, clear errors, URL encoding and the cross-thread/process rate limit,
checked against the loopback fake engines (the server's own request log and clock)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_engines import engines  # noqa: F401  (fixture)
from deepretrieval.retrieval.http_client import HTMLErrorPage, HTTPStatusError, MalformedResponse, RequestTimeout, RetryPolicy
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.search_backend import SearchError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TERM = "artificial intelligence radiology"
IDS = ["42286391", "42286351", "42286322", "42286178", "42286177"]


def client(engines, tmp_path, attempts=3, limiter=None, **kw) -> PubMedClient:
    return PubMedClient(engines.eutils_url, page_size=5, tool="t",
                        limiter=limiter or RateLimiter(tmp_path / "rl", 1000),
                        retry=RetryPolicy(attempts, backoff_base=0.01, backoff_max=0.05), **kw)


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most requests whose arrival times fall within any half-open window of `window` s."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- retries that end in success ---------------------------------------------------------------
@pytest.mark.parametrize("faults", [["500", "503"], ["truncated"], ["malformed"], ["html"],
                                    ["html503"], ["slow:3"]])
def test_transient_failures_are_retried(engines, tmp_path, faults):
    engines.faults.extend(faults)
    c = client(engines, tmp_path, read_timeout=1.0)
    assert c.search(TERM, max_results=5) == IDS
    assert len(engines.requests) == len(faults) + 1
    assert c.http.stats == {"requests": len(faults) + 1, "cache_hits": 0, "retries": len(faults)}


def test_429_honours_retry_after(engines, tmp_path):
    engines.faults.append("429:1")
    assert client(engines, tmp_path).search(TERM, max_results=5) == IDS
    t = engines.arrival_times()
    assert len(t) == 2 and t[1] - t[0] >= 1.0


# --- failures that end in a clear error --------------------------------------------------------
@pytest.mark.parametrize("fault, error, message", [
    ("500", HTTPStatusError, r"HTTP 500 .*gave up after 3 attempts"),
    ("429:0", HTTPStatusError, r"HTTP 429: .*API rate limit exceeded.*gave up after 3 attempts"),
    ("html", HTMLErrorPage, r"HTML page instead of JSON: 'Service Temporarily Unavailable'"),
    ("html503", HTTPStatusError, r"HTTP 503 with an HTML page: 'Service Temporarily Unavailable'"),
    ("truncated", MalformedResponse, r"truncated response: \d+ bytes of \d+"),
    ("malformed", MalformedResponse, r"malformed JSON .*body starts b'\{\"header\""),
])
def test_persistent_failures_raise_clear_errors(engines, tmp_path, fault, error, message):
    engines.faults.extend([fault] * 3)
    with pytest.raises(error, match=message) as info:
        client(engines, tmp_path).search(TERM, max_results=5)
    assert isinstance(info.value, SearchError) and "esearch.fcgi?" in str(info.value)
    assert len(engines.requests) == 3


def test_read_timeout(engines, tmp_path):
    engines.faults.extend(["slow:2"] * 2)
    with pytest.raises(RequestTimeout, match=r"no response within the 0.3 s read timeout.*2 attempts"):
        client(engines, tmp_path, attempts=2, read_timeout=0.3).search(TERM, max_results=5)


def test_client_errors_and_long_retry_after_are_not_retried(engines, tmp_path):
    engines.faults.append("400")
    with pytest.raises(HTTPStatusError, match="HTTP 400") as info:
        client(engines, tmp_path).search(TERM, max_results=5)
    assert info.value.status == 400 and len(engines.requests) == 1
    engines.faults.append("429:3600")
    with pytest.raises(HTTPStatusError, match="retry after 3600 s, more than the 120 s we wait"):
        client(engines, tmp_path).search(TERM, max_results=5)
    assert len(engines.requests) == 2


def test_connection_refused_is_a_search_error(tmp_path):
    import socket
    with socket.socket() as s:       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = PubMedClient(f"http://127.0.0.1:{port}/", limiter=RateLimiter(tmp_path / "rl", 1000),
                     retry=RetryPolicy(2, 0.01, 0.05))
    with pytest.raises(SearchError, match="connection failed: ConnectionRefusedError"):
        c.search("x")


# --- URL encoding ------------------------------------------------------------------------------
@pytest.mark.parametrize("term", [
    '"heart attack"[tiab] AND (aspirin OR "acetylsalicylic acid"[mh])',
    "C# & F# #1 a=b;c 50% + 1/2?",
    "café Müller 日本語 α-synuclein ≥ 5 µg",
    "  spaced   out\tterm ",
])
def test_query_reaches_server_intact(engines, tmp_path, term):
    client(engines, tmp_path).search(term, max_results=5)
    (req,) = engines.requests
    assert req.params["term"] == term and req.params["db"] == "pubmed"


def test_long_query_goes_as_post(engines, tmp_path):
    term = " OR ".join(f'"term number {i}"[tiab]' for i in range(120)) + " AND café#&"
    c = client(engines, tmp_path)
    c.search(term, max_results=5)
    c.search("short", max_results=5)
    long_req, short_req = engines.requests
    assert len(term) > 2000 and long_req.method == "POST" and long_req.params["term"] == term
    assert long_req.params["retmax"] == "5" and short_req.method == "GET"
    engines.faults.append("400")
    with pytest.raises(HTTPStatusError, match=r"\.\.\. \(\d+ characters\)\]$"):   # long URLs shortened
        c.search(term + " x", max_results=5)


# --- rate limit --------------------------------------------------------------------------------
def hammer(c: PubMedClient, threads: int = 4, each: int = 3) -> list[Exception]:
    errors = []

    def work():
        try:
            for _ in range(each):
                assert c.search(TERM, max_results=5) == IDS
        except Exception as exc:   # surfaced below; a thread's assert would be lost otherwise
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join(60)
    return errors


def test_rate_limit_with_four_threads(engines, tmp_path):
    start = time.monotonic()
    assert not hammer(client(engines, tmp_path, limiter=RateLimiter(tmp_path / "ncbi.rl", 3)))
    times = engines.arrival_times()
    assert len(times) == 12
    assert max_in_any_window(times) <= 3          # the strict check, on the server's clock
    assert 3.0 <= time.monotonic() - start < 30   # 12 requests at 3/s need at least 3 s


def test_same_load_without_the_limit_breaks_it(engines, tmp_path):
    """The control: the check above can fail; unthrottled, 12 requests arrive within a second."""
    assert not hammer(client(engines, tmp_path))
    assert max_in_any_window(engines.arrival_times()) > 3


def test_rate_limit_across_processes(engines, tmp_path):
    limiter_path = tmp_path / "shared.rl"
    code = (
        "import sys, threading\n"
        "from deepretrieval.retrieval.pubmed import PubMedClient\n"
        "from deepretrieval.retrieval.rate_limit import RateLimiter\n"
        f"c = PubMedClient({engines.eutils_url!r}, page_size=5, "
        f"limiter=RateLimiter({str(limiter_path)!r}, 3))\n"
        "def work():\n"
        f"    for _ in range(3): assert len(c.search({TERM!r}, max_results=5)) == 5\n"
        "ts = [threading.Thread(target=work) for _ in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    times = engines.arrival_times()
    assert len(times) == 12
    assert max_in_any_window(times) <= 3
    assert times[-1] - times[0] >= 3.0


def test_max_in_any_window_helper():
    assert max_in_any_window([0.0, 0.5, 0.99, 1.0, 1.6]) == 3
    assert max_in_any_window([0.0, 0.5, 0.99, 1.0, 1.2]) == 4
    assert max_in_any_window([0.0, 0.1, 0.2, 0.3]) == 4
    assert max_in_any_window([]) == 0

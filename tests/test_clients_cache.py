"""The on-disk request cache: hits cost no request, keys are normalised, failures are not cached,
expiry works, and a writer killed with SIGKILL mid-stream leaves a sound database."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_engines import engines  # noqa: F401  (fixture)
from deepretrieval.retrieval.http_client import HTTPStatusError, RetryPolicy
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.request_cache import RequestCache

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TERM = "artificial intelligence radiology"


def client(engines, tmp_path, **kw) -> PubMedClient:
    return PubMedClient(engines.eutils_url, page_size=5, cache=tmp_path / "cache.sqlite",
                        limiter=RateLimiter(tmp_path / "rl", 1000), retry=RetryPolicy(2, 0.01, 0.05), **kw)


def test_second_identical_request_makes_no_http_call(engines, tmp_path):
    c = client(engines, tmp_path)
    first = c.search(TERM, max_results=12)
    assert len(engines.requests) == 3
    assert c.search(TERM, max_results=12) == first
    assert len(engines.requests) == 3 and c.http.stats["cache_hits"] == 3
    # Another client on the same file (as another process opens it), with another key, tool
    # and spacing: still no request.
    other = client(engines, tmp_path, api_key="someone-else", tool="other")
    assert other.search("  artificial   intelligence\tradiology ", max_results=12) == first
    assert len(engines.requests) == 3
    other.search("attention mechanism", max_results=3)       # a different query is a miss
    assert len(engines.requests) == 4


def test_failures_are_not_cached(engines, tmp_path):
    engines.faults.extend(["500", "500"])
    with pytest.raises(HTTPStatusError):
        client(engines, tmp_path).search(TERM, max_results=5)
    assert client(engines, tmp_path).search(TERM, max_results=5)[0] == "42286391"
    assert len(engines.requests) == 3


def test_expiry_and_checksum(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite", max_age=0.3)
    key = cache.key("GET", "http://x/", {"term": "a"})
    cache.put(key, {"ids": [1, 2]})
    assert cache.get(key) == {"ids": [1, 2]}
    time.sleep(0.4)
    assert cache.get(key) is None and cache.clear_expired() == 1 and len(cache) == 0
    cache.put(key, {"ids": [1, 2]})
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:     # damage the stored value
        conn.execute("UPDATE responses SET value = '{\"ids\":[9]}'")
    assert cache.verify() == ("ok", 1)
    assert cache.get(key) is None and len(cache) == 0          # a bad row is dropped, not served


def test_key_normalisation():
    k = RequestCache.key
    assert k("GET", "u", {"term": "a  b", "db": "pubmed", "api_key": "1"}) == \
        k("get", "u", {"db": "pubmed", "term": " a b", "email": "e", "tool": "t"})
    assert k("GET", "u", {"term": "a b"}) != k("GET", "u", {"term": "a c"})
    assert k("GET", "u", {"term": "a", "retstart": 0}) != k("GET", "u", {"term": "a", "retstart": 5})


def test_threads_share_one_cache(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    errors = []

    def work(n):
        try:
            for i in range(50):
                key = cache.key("GET", "u", {"i": i})
                cache.put(key, {"i": i, "by": n})
                assert cache.get(key)["i"] == i
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 50 and cache.verify() == ("ok", 0)


WRITER = """
import sys
from deepretrieval.retrieval.request_cache import RequestCache
cache = RequestCache(sys.argv[1])
i = 0
while True:                       # writes until killed
    cache.put(cache.key("GET", "u", {"i": i}), {"i": i, "ids": [str(j) for j in range(3000)]})
    i += 1
"""


def test_survives_kill_9_of_a_writer(tmp_path):
    path = tmp_path / "c.sqlite"
    RequestCache(path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
    reader = RequestCache(path)
    try:
        deadline = time.monotonic() + 60
        while len(reader) < 30:                 # read while it writes (WAL: no blocking)
            assert writer.poll() is None, "writer died"
            assert time.monotonic() < deadline, "writer too slow"
            time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    cache = RequestCache(path)
    assert cache.verify() == ("ok", 0)
    n = len(cache)
    assert n >= 30
    for i in range(n):                          # rows are 0..n-1, each whole
        value = cache.get(cache.key("GET", "u", {"i": i}))
        assert value["i"] == i and len(value["ids"]) == 3000 and value["ids"][-1] == "2999"

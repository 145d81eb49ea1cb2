"""Hostile servers and dead processes against the HTTP clients (retrieval/http_client.py,
rate_limit.py) and the engine config (tasks/engines.py), on the loopback fake engines:

- a server that dribbles its answer is cut off at the total deadline, not kept alive by each byte;
- a 200 MB body and a gzip bomb (512 MiB inflated) are refused after at most the size cap in
  memory (peak RSS measured in a client subprocess);
- rate-limiter slots held by a process killed mid-request (SIGKILL) are freed as soon as someone
  waits for them, with a warning, and the rate still holds at the server for 3 processes;
- `[task.engine] base_url / timeout_s / read_timeout_s` reach the client built by build_task.

    python -m pytest -q tests/test_faults_http.py -s     # -s shows the measured figures
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_engines import engines, gzip_of_zeros  # noqa: F401  (fixture)
from deepretrieval.retrieval.http_client import (MAX_BODY_BYTES, HttpClient, MalformedResponse, RequestTimeout,
                                                 ResponseTooLarge, RetryPolicy)
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from test_clients_http import IDS, TERM, max_in_any_window

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MB = 2**20


def client(engines, tmp_path, attempts=1, **kw) -> PubMedClient:
    return PubMedClient(engines.eutils_url, page_size=5, tool="t", limiter=RateLimiter(tmp_path / "rl", 1000),
                        retry=RetryPolicy(attempts, backoff_base=0.01, backoff_max=0.05), **kw)


def esearch_params(retmax: int = 5) -> dict:
    return {"db": "pubmed", "term": TERM, "retmode": "json", "retstart": 0, "retmax": retmax}


# --- a total deadline per attempt ------------------------------------------------------
@pytest.mark.parametrize("fault", ["dribble:0.5", "dribble_body:0.5"])
def test_dribbling_server_is_cut_off_at_the_total_deadline(engines, tmp_path, fault):
    """One byte every 0.5 s never trips the 1.5 s read timeout; the 2 s deadline must."""
    engines.faults.append(fault)
    c = client(engines, tmp_path, read_timeout=1.5, total_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"no complete response within the 2.0 s total deadline"):
        c.search(TERM, max_results=5)
    overshoot = time.monotonic() - start - 2.0
    print(f"\n{fault}: cut off {overshoot * 1000:.0f} ms after the 2.0 s deadline")
    assert 0 <= overshoot < 0.3 and len(engines.requests) == 1


def test_dribble_is_retried_as_a_timeout_and_a_steady_slow_body_is_not_cut(engines, tmp_path):
    engines.faults.append("dribble_body:0.5")
    c = client(engines, tmp_path, attempts=2, read_timeout=1.5, total_timeout=1.0)
    assert c.search(TERM, max_results=5) == IDS
    assert c.http.stats == {"requests": 2, "cache_hits": 0, "retries": 1}
    # a body arriving a byte at a time but within the deadline is read whole, in order
    body_bytes = len(engines._esearch_body(esearch_params()))
    engines.faults.append("dribble_body:0.002")
    start = time.monotonic()
    assert client(engines, tmp_path, total_timeout=30.0).search(TERM, max_results=5) == IDS
    assert time.monotonic() - start >= body_bytes * 0.002


# --- size caps, sent and inflated ------------------------------------------------------
def test_size_cap_is_exact_for_plain_and_gzip_bodies(engines, tmp_path):
    n = len(engines._esearch_body(esearch_params()))
    for fault, message in (("", f"announces {n} bytes, over"), ("gzip", "inflates past")):
        for cap, ok in ((n, True), (n - 1, False)):
            if fault:
                engines.faults.append(fault)
            http = HttpClient(engines.eutils_url, max_body_bytes=cap, retry=RetryPolicy(2, 0.01, 0.05))
            if ok:
                assert http.get_json("esearch.fcgi", esearch_params())["esearchresult"]["idlist"] == IDS
            else:
                with pytest.raises(ResponseTooLarge, match=f"{message} the {n - 1}-byte cap"):
                    http.get_json("esearch.fcgi", esearch_params())
                assert http.stats["requests"] == 1      # not retried: the same query brings it again
    engines.faults.extend(["gzip_truncated"] * 2)
    with pytest.raises(MalformedResponse, match="corrupt gzip body: it ends inside its compressed stream"):
        client(engines, tmp_path, attempts=2).search(TERM, max_results=5)


# VmHWM (peak RSS of this process image) rather than ru_maxrss, which a child inherits from pytest
_RSS_PROBE = """
import json, re, sys, time
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.http_client import RetryPolicy
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
c = PubMedClient(sys.argv[1], page_size=5, limiter=RateLimiter(sys.argv[2], 1000), retry=RetryPolicy(3, 0.01, 0.05))
before = peak_kib()
start = time.monotonic()
try:
    c.search(sys.argv[3], max_results=5)
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"before_kib": before, "after_kib": peak_kib(), "seconds": time.monotonic() - start,
                  "error": error}))
"""


@pytest.mark.parametrize("fault, sent, error", [
    ("big:200000000", "200 MB, announced", r"announces 200000000 bytes, over the 33554432-byte cap"),
    ("big_unsized:200000000", "200 MB, no length", r"the response is over the 33554432-byte cap"),
    (f"gzip_bomb:{512 * MB}", "gzip of 512 MiB", r"gzip body inflates past the 33554432-byte cap"),
])
def test_huge_bodies_are_refused_with_bounded_memory(engines, tmp_path, fault, sent, error):
    if fault.startswith("gzip_bomb"):
        gzip_of_zeros(int(fault.split(":")[1]))        # built before the clock starts
    engines.faults.append(fault)
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, engines.eutils_url, str(tmp_path / "rl"), TERM],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    growth = (out["after_kib"] - out["before_kib"]) / 1024
    print(f"\n{sent}: refused after {out['seconds']:.2f} s, peak RSS {out['after_kib'] / 1024:.0f} MiB "
          f"(+{growth:.1f} MiB over the {out['before_kib'] / 1024:.0f} MiB before the request; "
          f"cap {MAX_BODY_BYTES / MB:.0f} MiB)")
    assert out["error"].startswith("ResponseTooLarge") and re.search(error, out["error"])
    assert len(engines.requests) == 1                   # not retried
    assert growth < MAX_BODY_BYTES / MB + 8             # 40 MiB; the bodies are 191 and 512 MiB


# --- rate-limiter slots of dead processes ----------------------------------------------
@pytest.fixture
def children():
    """The subprocesses a test starts; any still running when it ends are killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_slot_of_a_killed_holder_is_freed_and_a_live_one_is_not(tmp_path, caplog, children):
    path = tmp_path / "one.rl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom deepretrieval.retrieval.rate_limit import RateLimiter\n"
         f"RateLimiter({str(path)!r}, 1, period=0.2).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV)
    children.append(holder)
    assert holder.stdout.readline() == "held\n"
    limiter = RateLimiter(path, 1, period=0.2)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (limiter.acquire(), got.set()), daemon=True)
    with caplog.at_level(logging.WARNING, logger="deepretrieval.retrieval.rate_limit"):
        waiter.start()
        assert not got.wait(1.0)                        # the holder is alive: its slot stays taken
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        assert got.wait(5.0)
        freed_after = time.monotonic() - killed
    print(f"\nslot of the killed process taken {freed_after * 1000:.0f} ms after its death (period 0.2 s)")
    assert 0.2 <= freed_after < 0.6                     # one poll, then one period
    assert f"slot 0 was held by process {holder.pid}, which is gone" in caplog.text


def test_recycled_pid_does_not_keep_a_slot(tmp_path, caplog):
    """A slot naming a live pid but another start time belonged to an earlier process of that pid."""
    limiter = RateLimiter(tmp_path / "r.rl", 2, period=0.1)
    ppid = os.getppid()
    with limiter._locked_slots() as slots:
        slots.set(0, time.monotonic() + 300, ppid, 1)                  # pid alive, started at tick 1: not it
        slots.set(1, time.monotonic() + 300, *limiter._me)             # ourselves: alive
    with caplog.at_level(logging.WARNING, logger="deepretrieval.retrieval.rate_limit"):
        start = time.monotonic()
        assert limiter.acquire() == 0
    assert 0.1 <= time.monotonic() - start < 0.5
    assert caplog.text.count("which is gone") == 1 and f"process {ppid}," in caplog.text


# argv: eutils URL, limiter file, term, threads, searches per thread; 3 requests/s
_HAMMER = """
import sys, threading
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter
c = PubMedClient(sys.argv[1], page_size=5, limiter=RateLimiter(sys.argv[2], 3))
def work():
    for _ in range(int(sys.argv[5])):
        assert len(c.search(sys.argv[3], max_results=5)) == 5
ts = [threading.Thread(target=work) for _ in range(int(sys.argv[4]))]
[t.start() for t in ts]; [t.join() for t in ts]
"""


def test_processes_killed_mid_request_do_not_block_the_others(engines, tmp_path, children):
    """3 requests hang at the server; their process is SIGKILLed holding all 3 slots (3/s). Then
    3 processes make 3 requests each: they must start within about a second, not after the
    300 s hold limit, and never exceed 3 requests in any 1 s at the server."""
    rl = str(tmp_path / "shared.rl")
    engines.faults.extend(["hang"] * 3)
    dead = subprocess.Popen([sys.executable, "-c", _HAMMER, engines.eutils_url, rl, TERM, "3", "1"], env=ENV,
                            stderr=subprocess.DEVNULL)
    children.append(dead)
    deadline = time.monotonic() + 60
    while len(engines.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(engines.requests) == 3
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    killed = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, engines.eutils_url, rl, TERM, "1", "3"], env=ENV,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    children.extend(procs)
    logs = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        logs.append(err)
    times = engines.arrival_times()
    new = [t for t in times if t > killed]
    span = new[-1] - new[0]
    print(f"\n{len(new)} requests of 3 processes after the kill: first {new[0] - killed:.2f} s after it, "
          f"at most {max_in_any_window(times)} in any 1 s window, {len(new) / (span + 1):.2f} requests/s "
          f"(from the first to 1 s after the last: {span + 1:.2f} s)")
    assert len(new) == 9 and max_in_any_window(times) <= 3
    assert new[-1] - killed < 20                        # the 300 s hold limit would block them
    freed = "".join(logs).count(f"held by process {dead.pid}, which is gone")
    assert freed == 3                                   # each of the dead process's slots, once


# --- base URL and timeouts from the engine config --------------------------------------
def test_engine_config_points_the_client_at_another_server(engines, tmp_path):
    from deepretrieval.run_config import load_config
    from deepretrieval.tasks.registry import build_task
    data = tmp_path / "reviews"
    data.mkdir()
    review = {"pico": {"P": "radiologists", "I": "AI", "C": "none", "O": "accuracy"},
              "publication_pmids": IDS[:2], "pub_date": "2030/01/01"}
    (data / "test.jsonl").write_text(json.dumps(review) + "\n")
    cfg = load_config(ROOT / "configs" / "pubmed.toml", [
        f"task.data={json.dumps(str(data))}", f"task.engine.base_url={json.dumps(engines.eutils_url)}",
        "task.engine.cache=''", "task.engine.timeout_s=0.5", "task.engine.read_timeout_s=0.3"])
    task = build_task(cfg.task)
    http = task.backend.http
    assert (http.base_url, http.total_timeout, http.read_timeout) == (engines.eutils_url, 0.5, 0.3)
    # the first attempt dribbles past timeout_s, the second stalls past read_timeout_s: both are
    # retried, so the third answers (a default client would wait out both)
    engines.faults.extend(["dribble_body:0.1", "slow:1"])
    assert task.evaluate([TERM], "test") == {"recall@3000": 1.0, "per_example": [1.0], "engine_errors": 0.0,
                                              "unanswered": 0.0, "n": 1.0}
    assert [r.path for r in engines.requests] == ["/entrez/eutils/esearch.fcgi"] * 3
    assert engines.requests[-1].params["term"] == TERM and engines.requests[-1].params["maxdate"] == "2030/01/01"


@pytest.mark.parametrize("override, message", [
    ("task.engine.base_url='ftp://mirror/'", r"'ftp://mirror/' is not an http\(s\) URL"),
    ("task.engine.base_url='eutils.example.org'", r"'eutils.example.org' is not an http\(s\) URL"),
    ("task.engine.timeout_s=0", "must be > 0"),
])
def test_engine_config_errors_are_one_line(override, message):
    from deepretrieval.run_config import ConfigError, load_config
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(ROOT / "configs" / "pubmed.toml", [override])
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="base_url is for the web engines"):
        load_config(ROOT / "configs" / "scifact_bm25.toml", ["task.engine.base_url='http://x/'"])


def test_ctgov_engine_base_url(engines):
    from deepretrieval.tasks.engines import EngineConfig, literature_backend
    backend = literature_backend(EngineConfig(kind="ctgov", base_url=engines.ctgov_url, timeout_s=5.0))
    assert backend.search_full("", 5, params={"query.cond": "Phelan-McDermid Syndrome"}).total > 0
    assert engines.requests[0].path == "/api/v2/studies" and backend.http.total_timeout == 5.0

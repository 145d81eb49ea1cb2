"""A loopback fake of NCBI esearch and ClinicalTrials.gov v2 for the client tests.

    with FakeEngines(api_fixtures_dir) as server:       # http.server thread on 127.0.0.1, port 0
        PubMedClient(server.eutils_url, ...); ClinicalTrialsClient(server.ctgov_url, ...)
        server.faults.extend(["429:1", "500"])           # the next requests fail so, in order
        server.requests                                  # [Request(t, path, params)], arrival order

Responses are the real recorded ones in tests/data/api_fixtures:
- esearch: a request for a recorded term at retstart=0 and the recorded retmax gets the recorded
  file byte for byte. Other pages of a recorded term are built from that file (same count and
  fields) over an id list that starts with the recorded ids and continues below the last one, so
  paging can be checked to any depth. An unknown term gets a zero-hit answer. retstart beyond
  9,998 gets NCBI's ERROR answer.
- studies: the request's query.*/filter.* params and pageSize pick the recorded first page; a
  pageToken picks the recorded page it leads to (search_phelan_limit5 -> search_phelan_next).
POST requests (form-encoded, as E-utilities accept) are answered like GETs.
Faults, consumed one per request: "429:<retry-after>", "<status>" (e.g. "500"), "slow:<seconds>",
"truncated" (Content-Length beyond the bytes sent), "malformed" (half the JSON, honest length),
"html" (200 with an HTML page), "html503", "ncbi_error:<message>"; and hostile ones:
"hang" (no answer until the server closes), "dribble:<seconds>" (the whole response one byte per
<seconds>), "dribble_body:<seconds>" (headers at once, then the body so), "big:<bytes>" (a body of
that size, announced), "big_unsized:<bytes>" (the same without Content-Length, ended by closing),
"gzip" (the right answer gzipped), "gzip_bomb:<bytes>" (gzip of that many zero bytes),
"gzip_truncated" (the gzipped answer cut short, honest length).
Every request's arrival time (time.monotonic, system-wide on Linux) is recorded before anything
else, so rate checks use the server's own clock.
"""
from __future__ import annotations

import functools
import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

# Recorded CTGov first pages: the params each was requested with (SOURCE.md), besides fields/countTotal.
CTGOV_FIRST_PAGES = {
    "search_age_count_20260811.json": ({}, 1),
    "search_keytruda_limit3_20260811.json": ({"query.intr": "Keytruda"}, 3),
    "search_melanoma_recruiting_limit3_20260811.json":
        ({"query.cond": "melanoma", "filter.overallStatus": "RECRUITING"}, 3),
    "search_nsclc_egfr_l858r_20260811.json": ({
        "query.cond": "non-small cell lung cancer",
        "query.term": '(AREA[EligibilityCriteria]("EGFR L858R") OR AREA[BriefTitle]("EGFR L858R") OR '
                      'AREA[OfficialTitle]("EGFR L858R") OR AREA[BriefSummary]("EGFR L858R") OR '
                      'AREA[Keyword]("EGFR L858R"))'}, 50),
    "search_phelan_limit50_20260811.json": ({"query.cond": "Phelan-McDermid Syndrome"}, 50),
    "search_phelan_limit5_20260811.json": ({"query.cond": "Phelan-McDermid Syndrome"}, 5),
}
CTGOV_NEXT_PAGES = {"search_phelan_limit5_20260811.json": "search_phelan_next_20260811.json"}
# Recorded esearch answers, by the term we serve them for.
ESEARCH_TERMS = {
    "artificial intelligence radiology": "pubmed_esearch_ai_radiology__sotawhat.json",
    "attention mechanism": "pubmed_esearch_attention_mechanism__fastpaper-cli.json",
}


@dataclass(frozen=True)
class Request:
    t: float
    path: str
    params: dict          # name -> the last value, percent-decoded (query string or POST form)
    method: str = "GET"


@functools.lru_cache(maxsize=2)
def gzip_of_zeros(n: int) -> bytes:
    """A gzip member that inflates to `n` zero bytes (1,000:1 and more), built a MiB at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    mib = bytes(2**20)
    parts = [z.compress(mib) for _ in range(n // 2**20)] + [z.compress(bytes(n % 2**20)), z.flush()]
    return b"".join(parts)


def esearch_universe(fixture: dict, n: int = 12_000) -> list[str]:
    """The id list the fake esearch pages through: the recorded ids, then descending PMIDs."""
    ids = list(fixture["esearchresult"]["idlist"])
    last = int(ids[-1])
    return ids + [str(last - k) for k in range(1, n - len(ids) + 1)]


class FakeEngines:
    def __init__(self, fixtures_dir: Path):
        self.dir = Path(fixtures_dir)
        self.requests: list[Request] = []
        self.faults: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()   # releases "hang" requests
        self.esearch = {term: (self.dir / "ncbi_esearch" / f).read_bytes() for term, f in ESEARCH_TERMS.items()}
        self.universe = {term: esearch_universe(json.loads(b)) for term, b in self.esearch.items()}
        ct = self.dir / "ctgov_v2_studies"
        self.first_pages = [(p, size, (ct / f).read_bytes()) for f, (p, size) in CTGOV_FIRST_PAGES.items()]
        self.by_token = {}   # a recorded next page is served for the token of the page before it
        for first, following in CTGOV_NEXT_PAGES.items():
            token = json.loads((ct / first).read_bytes())["nextPageToken"]
            self.by_token[token] = (ct / following).read_bytes()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "FakeEngines":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def eutils_url(self) -> str:
        return self.base + "/entrez/eutils/"

    @property
    def ctgov_url(self) -> str:
        return self.base + "/api/v2/"

    def arrival_times(self) -> list[float]:
        with self._lock:
            return sorted(r.t for r in self.requests)

    # --- responses -----------------------------------------------------------------------------
    def _esearch_body(self, params: dict) -> bytes:
        term = params.get("term", "")
        retstart, retmax = int(params.get("retstart", 0)), int(params.get("retmax", 20))
        if retstart > 9998:
            return json.dumps({"header": {"type": "esearch", "version": "0.3"}, "esearchresult": {
                "ERROR": "Search Backend failed: Exception:\n'retstart' cannot be larger than 9998. "
                         "For PubMed, ESearch can only retrieve the first 9,999 records matching the "
                         "query."}}).encode()
        if term not in self.esearch:
            return json.dumps({"header": {"type": "esearch", "version": "0.3"}, "esearchresult": {
                "count": "0", "retmax": "0", "retstart": "0", "idlist": [], "translationset": [],
                "querytranslation": term}}).encode()
        recorded = json.loads(self.esearch[term])
        res = recorded["esearchresult"]
        if retstart == 0 and retmax == int(res["retmax"]):
            return self.esearch[term]
        ids = self.universe[term][retstart:min(retstart + retmax, int(res["count"]))]
        res.update(retstart=str(retstart), retmax=str(len(ids)), idlist=ids)
        return json.dumps(recorded, separators=(",", ":")).encode()

    def _studies_body(self, params: dict) -> tuple[int, bytes]:
        if "pageToken" in params:
            body = self.by_token.get(params["pageToken"])
            return (200, body) if body else (400, b'{"message":"unknown pageToken"}')
        asked = {k: v for k, v in params.items() if k.startswith(("query.", "filter."))}
        for fixture_params, size, body in self.first_pages:
            if fixture_params == asked and int(params.get("pageSize", 10)) == size:
                return 200, body
        return 200, b'{"totalCount":0,"studies":[]}'

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype="application/json", headers=(),
                      length: int | None = None):
                self.close_connection = True
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body) if length is None else length))
                    self.send_header("Connection", "close")
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass                    # the client gave up first (a "slow" fault past its timeout)

            def do_POST(self):
                self.do_GET()

            def do_GET(self):
                t = time.monotonic()
                parts = urlsplit(self.path)
                query = parts.query
                if self.command == "POST":
                    query = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("ascii")
                params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
                with server._lock:
                    server.requests.append(Request(t, parts.path, params, self.command))
                    fault = server.faults.pop(0) if server.faults else None
                if parts.path.endswith("/esearch.fcgi"):
                    status, body = 200, server._esearch_body(params)
                elif parts.path.endswith("/api/v2/studies"):
                    status, body = server._studies_body(params)
                else:
                    status, body = 404, b'{"message":"not found"}'
                if fault is None:
                    return self._send(status, body)
                kind, _, arg = fault.partition(":")
                if kind == "429":
                    return self._send(429, b'{"error":"API rate limit exceeded","count":"4"}',
                                      headers=[("Retry-After", arg)])
                if kind.isdigit():
                    return self._send(int(kind), b"")
                if kind == "slow":
                    time.sleep(float(arg))
                    return self._send(status, body)
                if kind == "truncated":
                    return self._send(200, body[: len(body) // 2], length=len(body))
                if kind == "malformed":
                    return self._send(200, body[: len(body) // 2])
                if kind in ("html", "html503"):
                    page = (b"<!DOCTYPE html><html><head><title>Service Temporarily Unavailable"
                            b"</title></head><body><h1>503</h1>Please try later.</body></html>")
                    return self._send(200 if kind == "html" else 503, page, ctype="text/html")
                if kind == "ncbi_error":
                    return self._send(200, json.dumps({"header": {"type": "esearch"}, "esearchresult": {
                        "ERROR": arg}}).encode())
                try:
                    return self._hostile(kind, arg, status, body)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up: expected
                    self.close_connection = True

            def _hostile(self, kind: str, arg: str, status: int, body: bytes):
                if kind == "hang":
                    server._closing.wait()
                    self.close_connection = True
                    return None
                if kind == "gzip":
                    return self._send(status, gzip.compress(body), headers=[("Content-Encoding", "gzip")])
                if kind == "gzip_truncated":
                    packed = gzip.compress(body)
                    return self._send(status, packed[: len(packed) // 2], headers=[("Content-Encoding", "gzip")])
                if kind == "gzip_bomb":
                    return self._send(200, gzip_of_zeros(int(arg)), headers=[("Content-Encoding", "gzip")])
                if kind in ("dribble", "dribble_body"):
                    head = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                    if kind == "dribble_body":
                        self.wfile.write(head)
                        head = b""
                    data = head + body
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        if server._closing.wait(float(arg)):
                            break
                    self.close_connection = True
                    return None
                if kind in ("big", "big_unsized"):
                    size, chunk = int(arg), b"x" * 2**20
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if kind == "big":
                        self.send_header("Content-Length", str(size))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for start in range(0, size, len(chunk)):
                        self.wfile.write(chunk[: size - start])
                    self.close_connection = True
                    return None
                raise ValueError(f"unknown fault {kind!r}")

        return Handler


@pytest.fixture
def engines(api_fixtures_dir):
    """A running FakeEngines; import this name into a test module to use it."""
    with FakeEngines(api_fixtures_dir) as server:
        yield server

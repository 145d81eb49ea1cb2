"""The HTTP plumbing under the PubMed and ClinicalTrials.gov clients: JSON GETs that are polite and
fail loudly.

    client = HttpClient("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/",
                        limiter=RateLimiter.for_service("ncbi", 3), cache=RequestCache(path))
    data = client.get_json("esearch.fcgi", {"db": "pubmed", "term": "asthma", "retmode": "json"})

Every request goes through, in order: the cache (a hit costs no request), the rate limiter (one slot
per attempt, held while it is in flight), then the standard library's `http.client` with separate
connect and read timeouts (urllib has only one), gzip accepted. The answer must be a 200 with JSON
that the caller's `validate` accepts; only then is it cached.

Limits that hold against any server: the read timeout bounds each wait for bytes, and
`total_timeout` bounds the whole attempt (a server that sends one byte just inside every read
timeout is cut off at it: a watchdog shuts the socket down, and the attempt fails as a retryable
`RequestTimeout`). `max_body_bytes` caps the body both as sent and once gunzipped; the body is
read and inflated in chunks, so a huge body or a gzip bomb is refused (`ResponseTooLarge`, not
retried) after at most the cap in memory, and a Content-Length over the cap before any of it.

With `post_over=N`, a request whose URL would be longer than N characters is sent as a POST of
the same form-encoded parameters (E-utilities accept that, and NCBI asks for it with long terms:
servers refuse URLs of a few thousand characters); the cache key does not depend on the method.

Failures raise a subclass of `deepretrieval.retrieval.search_backend.SearchError` that names the URL and what
was wrong; the reward code turns any `SearchError` into the paper's penalty. Transient ones are
retried with exponential backoff and full jitter (sleep uniform(0, base * 2**attempt), capped),
and a 429 or 503 that sends `Retry-After` (seconds or an HTTP date) is retried after at least
that long:
  retried:      429, 5xx, timeouts (per read or in all), refused/reset connections, truncated
                bodies, malformed JSON, HTML error pages served with 200 (NCBI does this under
                load), and engine errors the validator marks retryable;
  not retried:  other 4xx, engine errors about the query itself, a Retry-After beyond
                `RetryPolicy.max_retry_after`, a body over the size cap.
Standard library only: nothing here needs more than `http.client`, and it keeps the product's
dependencies to what DESIGN.md lists.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, urlencode, urljoin, urlsplit

from deepretrieval.retrieval.rate_limit import RateLimiter
from deepretrieval.retrieval.request_cache import RequestCache, normalise_request
from deepretrieval.retrieval.search_backend import SearchError

log = logging.getLogger(__name__)

USER_AGENT = "deepretrieval/0.1 (+https://github.com/pat-jj/DeepRetrieval reimplementation)"
CONNECT_TIMEOUT = 10.0           # seconds to open the connection
READ_TIMEOUT = 60.0              # seconds of silence allowed between bytes
TOTAL_TIMEOUT = 120.0            # seconds for one attempt in all, connection to last byte
MAX_BODY_BYTES = 32 * 2**20      # an esearch page of 10,000 ids is ~0.2 MB; a CTGov id page less
_CHUNK = 64 * 1024               # bytes read at a time
_INFLATE_STEP = 2**20            # bytes inflated at a time


class RequestTimeout(SearchError):
    retryable = True


class ConnectionFailed(SearchError):
    retryable = True


class ResponseTooLarge(SearchError):
    """A body over `max_body_bytes`, as sent or once inflated (the same query would bring it again)."""
    retryable = False


class HTTPStatusError(SearchError):
    def __init__(self, message: str, url: str, status: int, retry_after: float | None = None):
        super().__init__(message, url)
        self.status = status
        self.retry_after = retry_after
        self.retryable = status == 429 or status >= 500


class HTMLErrorPage(SearchError):
    """An HTML page where JSON was expected (an error or maintenance page)."""
    retryable = True


class MalformedResponse(SearchError):
    """A body that is not the JSON expected: truncated, not JSON, or missing required fields."""
    retryable = True


class EngineError(SearchError):
    """The engine answered with an error in its JSON (e.g. NCBI's `ERROR` field)."""

    def __init__(self, message: str, url: str = "", retryable: bool = False):
        super().__init__(message, url)
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5            # attempts in all, the first included
    backoff_base: float = 0.5        # seconds; attempt n sleeps uniform(0, base * 2**n)
    backoff_max: float = 30.0
    max_retry_after: float = 120.0   # a server asking for a longer wait fails the request instead


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _html_summary(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    for tag in ("title", "h1"):
        m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.I | re.S)
        if m and m.group(1).strip():
            return re.sub(r"\s+", " ", m.group(1)).strip()[:200]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()[:200]


def _looks_like_html(body: bytes, content_type: str) -> bool:
    return "html" in content_type.lower() or body.lstrip().startswith(b"<")   # JSON never starts "<"


def check_base_url(url: str) -> None:
    """Raises ValueError unless `url` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL {url!r} is not an http(s) URL such as "
                         "'http://127.0.0.1:8080/entrez/eutils/'")


class _Watchdog:
    """Shuts the watched socket down when the attempt's time is up, so whatever read is blocked
    returns at once, however the server spaces out its bytes (socket timeouts only bound each
    wait). `expired` tells the caller why its read ended."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """The connected socket (http.client drops its own reference to it before the body of a
        `Connection: close` answer is read, so the connection object cannot be asked later)."""
        self._sock = sock
        if self.expired:         # the time ran out while connecting
            self._cut()

    def _cut(self) -> None:
        self.expired = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:      # already closed
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def _read_body(resp: http.client.HTTPResponse, cap: int, url: str) -> bytes:
    """The body, gunzipped when the server says so, refused as soon as it (sent or inflated) is
    over `cap` bytes: never more than about `cap` bytes in memory."""
    if resp.length is not None and resp.length > cap:
        raise ResponseTooLarge(f"the response announces {resp.length} bytes, over the "
                               f"{cap}-byte cap", url)
    gzipped = resp.headers.get("Content-Encoding", "").lower() == "gzip"
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzipped else None
    parts, sent, size = [], 0, 0
    in_member = False                # a gzip member has begun and not yet ended
    while chunk := resp.read1(_CHUNK):
        sent += len(chunk)
        if sent > cap:
            raise ResponseTooLarge(f"the response is over the {cap}-byte cap", url)
        if inflate is None:
            parts.append(chunk)
        while inflate is not None and chunk:
            # bounded steps (zlib builds each output twice) that stop one byte past the cap
            out = inflate.decompress(chunk, min(_INFLATE_STEP, cap + 1 - size))
            size += len(out)
            if size > cap:
                raise ResponseTooLarge(f"the gzip body inflates past the {cap}-byte cap (after "
                                       f"{sent} compressed bytes)", url)
            parts.append(out)
            in_member = not inflate.eof
            if inflate.eof:          # what follows is another gzip member (or garbage: an error)
                chunk, inflate = inflate.unused_data, zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            else:                    # input held back by the output limit
                chunk = inflate.unconsumed_tail
    if resp.length:                  # the connection closed before Content-Length bytes came
        raise MalformedResponse(f"truncated response: {sent} bytes of {sent + resp.length}", url)
    if in_member:
        raise MalformedResponse("corrupt gzip body: it ends inside its compressed stream", url)
    return b"".join(parts)


class HttpClient:
    """GET JSON from one service; thread-safe (one connection per request)."""

    def __init__(self, base_url: str, limiter: RateLimiter | None = None,
                 cache: RequestCache | None = None, retry: RetryPolicy = RetryPolicy(),
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 total_timeout: float = TOTAL_TIMEOUT, max_body_bytes: int = MAX_BODY_BYTES,
                 user_agent: str = USER_AGENT, post_over: int | None = None):
        check_base_url(base_url)
        if min(connect_timeout, read_timeout, total_timeout) <= 0 or max_body_bytes < 1:
            raise ValueError("HTTP timeouts and the body size cap must be positive")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.limiter = limiter
        self.cache = cache
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_body_bytes = max_body_bytes
        self.user_agent = user_agent
        self.post_over = post_over    # URLs longer than this go as POST (services that accept it)
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def get_json(self, path: str, params: dict, validate: Callable[[Any, str], None] | None = None) -> Any:
        """The parsed JSON of GET base_url/path?params; `validate(data, url)` may raise EngineError."""
        url = urljoin(self.base_url, path)
        params = {k: v for k, v in params.items() if v is not None}
        key = None
        if self.cache is not None:
            key = self.cache.key("GET", url, params)
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return hit
        full_url = url + "?" + urlencode(params, quote_via=quote, safe="")
        data = self._get_with_retries(full_url, validate)
        if key is not None:
            self.cache.put(key, data, normalise_request("GET", url, params))
        return data

    def _get_with_retries(self, full_url: str, validate) -> Any:
        policy = self.retry
        for attempt in range(policy.max_attempts):
            try:
                data = self._attempt(full_url)
                if validate is not None:
                    validate(data, full_url)
                return data
            except SearchError as exc:
                if not exc.retryable or attempt + 1 == policy.max_attempts:
                    if attempt:
                        exc.args = (f"{exc.args[0]} (gave up after {attempt + 1} attempts)",)
                    raise
                delay = random.uniform(0, min(policy.backoff_max, policy.backoff_base * 2 ** attempt))
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    if retry_after > policy.max_retry_after:
                        exc.args = (f"{exc.args[0]} (server asks to retry after {retry_after:.0f} s, "
                                    f"more than the {policy.max_retry_after:.0f} s we wait)",)
                        raise
                    delay += retry_after
                log.warning("retrying in %.2f s (attempt %d of %d): %s", delay, attempt + 2,
                            policy.max_attempts, exc)
                self._count("retries")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, full_url: str) -> Any:
        if self.limiter is None:
            status, headers, body = self._send(full_url)
        else:
            with self.limiter.slot():
                status, headers, body = self._send(full_url)
        content_type = headers.get("Content-Type", "")
        if status != 200:
            what = f"HTTP {status}"
            if body and _looks_like_html(body, content_type):
                what += f" with an HTML page: {_html_summary(body)!r}"
            elif body:
                what += f": {body[:200].decode('utf-8', 'replace')!r}"
            raise HTTPStatusError(what, full_url, status, _retry_after_seconds(headers.get("Retry-After")))
        if _looks_like_html(body, content_type):
            raise HTMLErrorPage(f"HTML page instead of JSON: {_html_summary(body)!r}", full_url)
        try:
            return json.loads(body)
        except ValueError as exc:   # JSONDecodeError and UnicodeDecodeError
            raise MalformedResponse(f"malformed JSON ({exc}); body starts {body[:80]!r}, "
                                    f"{len(body)} bytes", full_url) from None

    def _send(self, full_url: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One GET (or a POST of the same form, for a URL over `post_over`) within
        `total_timeout`; returns (status, headers, decoded body) or raises a SearchError."""
        parts = urlsplit(full_url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname, parts.port, timeout=min(self.connect_timeout, self.total_timeout))
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", "Accept-Encoding": "gzip"}
        if self.post_over is not None and len(full_url) > self.post_over:
            method, target, payload = "POST", parts.path, parts.query.encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            method, target, payload = "GET", parts.path + ("?" + parts.query if parts.query else ""), None
        self._count("requests")
        watchdog = _Watchdog(self.total_timeout)
        try:
            answer = self._exchange(conn, watchdog, method, target, payload, headers, full_url)
        except SearchError as exc:
            if watchdog.expired and not isinstance(exc, ResponseTooLarge):
                raise self._deadline_error(full_url) from None   # the shutdown is what it saw
            raise
        finally:
            watchdog.cancel()
            conn.close()
        if watchdog.expired:         # a body without a length ends at the shutdown, cut short
            raise self._deadline_error(full_url)
        return answer

    def _deadline_error(self, full_url: str) -> RequestTimeout:
        return RequestTimeout(f"no complete response within the {self.total_timeout} s total "
                              "deadline", full_url)

    def _exchange(self, conn, watchdog: _Watchdog, method: str, target: str, payload: bytes | None,
                  headers: dict, full_url: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        try:
            try:
                conn.connect()
            except TimeoutError:   # socket.timeout is TimeoutError
                raise RequestTimeout(f"connect timed out after {conn.timeout} s", full_url) from None
            watchdog.watch(conn.sock)
            conn.sock.settimeout(self.read_timeout)
            conn.request(method, target, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, _read_body(resp, self.max_body_bytes, full_url)
        except TimeoutError:   # socket.timeout is TimeoutError
            raise RequestTimeout(f"no response within the {self.read_timeout} s read timeout",
                                 full_url) from None
        except http.client.IncompleteRead as exc:
            raise MalformedResponse(f"truncated response: {len(exc.partial)} bytes of "
                                    f"{len(exc.partial) + (exc.expected or 0)}", full_url) from None
        except zlib.error as exc:
            raise MalformedResponse(f"corrupt gzip body: {exc}", full_url) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"connection failed: {exc!r}", full_url) from None

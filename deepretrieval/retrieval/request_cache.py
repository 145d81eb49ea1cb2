"""On-disk cache of search-engine responses: sqlite in WAL mode, shared by threads and processes.

    cache = RequestCache("~/.cache/deepretrieval/search.sqlite", max_age=7 * 86400)
    key = cache.key("GET", "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/esearch.fcgi",
                    {"db": "pubmed", "term": "asthma"})
    cache.get(key)            # the stored JSON value, or None (absent or expired)
    cache.put(key, value, request="...")

Keys are the SHA-256 of the *normalised* request: method, URL, and the parameters sorted by name
with whitespace runs in values collapsed (engines treat "a  b" as "a b"), leaving out parameters
that identify the caller but do not change the answer (`api_key`, `tool`, `email`). So the same
search costs one request however it was spelled and whoever asked.

Durability: sqlite commits are atomic, so a process killed mid-write (kill -9) leaves either the
whole row or none. WAL mode lets readers run while one writer writes; `busy_timeout` makes
concurrent writers wait instead of failing. Each row also stores the SHA-256 of its value, and a
row whose value does not match (a disk fault, a hand edit) is deleted and counted as a miss rather
than handed back. Each thread, and each process after a fork, opens its own connection.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

# Parameters that say who is asking, not what: they never split the cache.
CALLER_PARAMS = frozenset({"api_key", "tool", "email"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key      TEXT PRIMARY KEY,
    request  TEXT NOT NULL,
    value    TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    created  REAL NOT NULL
)"""


def normalise_request(method: str, url: str, params: dict) -> str:
    """Canonical text of a request: the cache key is its hash."""
    clean = sorted((str(k), re.sub(r"\s+", " ", str(v)).strip())
                   for k, v in params.items() if k not in CALLER_PARAMS and v is not None)
    return json.dumps([method.upper(), url, clean], ensure_ascii=False, separators=(",", ":"))


class RequestCache:
    """A key -> JSON value store in one sqlite file; `max_age` seconds (None: forever)."""

    def __init__(self, path: str | os.PathLike, max_age: float | None = None,
                 busy_timeout: float = 60.0):
        self.path = Path(path).expanduser()
        self.max_age = max_age
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute(_SCHEMA)
        conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")   # in WAL: safe against process crashes
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():   # never use a connection across fork
            local.conn, local.pid = self._connect(), os.getpid()
        return local.conn

    @staticmethod
    def key(method: str, url: str, params: dict) -> str:
        return hashlib.sha256(normalise_request(method, url, params).encode()).hexdigest()

    def get(self, key: str):
        row = self._conn.execute("SELECT value, sha256, created FROM responses WHERE key = ?",
                                 (key,)).fetchone()
        if row is None:
            return None
        value, digest, created = row
        if hashlib.sha256(value.encode()).hexdigest() != digest:
            self._conn.execute("DELETE FROM responses WHERE key = ?", (key,))
            return None
        if self.max_age is not None and time.time() - created > self.max_age:
            return None
        return json.loads(value)

    def put(self, key: str, value, request: str = "") -> None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        self._conn.execute(
            "INSERT OR REPLACE INTO responses (key, request, value, sha256, created) VALUES (?,?,?,?,?)",
            (key, request, text, hashlib.sha256(text.encode()).hexdigest(), time.time()))

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def verify(self) -> tuple[str, int]:
        """(sqlite's integrity_check answer, number of rows whose value fails its checksum)."""
        conn = self._conn
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        bad = sum(hashlib.sha256(v.encode()).hexdigest() != d
                  for v, d in conn.execute("SELECT value, sha256 FROM responses"))
        return integrity, bad

    def clear_expired(self) -> int:
        """Deletes rows older than `max_age`; returns how many."""
        if self.max_age is None:
            return 0
        cur = self._conn.execute("DELETE FROM responses WHERE created < ?", (time.time() - self.max_age,))
        return cur.rowcount

"""Read-only, time- and size-limited execution of one SQL query against a sqlite database file.

    from deepretrieval.sqlexec.sandbox import Limits, execute
    rows = execute("database/pets_1/pets_1.sqlite", "SELECT count(*) FROM Student", Limits(timeout_s=5))

The model writes arbitrary SQL during training, so every query runs behind layered guards
(tests/test_sql_sandbox.py attacks each one):

- the file is opened read-only through a URI (`mode=ro`; `immutable=1` by default, because
  dataset databases never change while we evaluate: sqlite then skips locking and change
  detection, which is faster and works on read-only media. Pass `immutable=False` for a file
  another process may be writing);
- an authorizer *allowlist*: only SELECT, reading columns, recursive CTEs and functions not on
  a denylist are allowed, so INSERT/UPDATE/DELETE/DROP/CREATE (including TEMP objects, which
  a read-only connection could otherwise create), ATTACH/DETACH (and VACUUM INTO, which
  attaches its target), every PRAGMA, transactions and `load_extension` are refused at
  prepare time, before anything runs;
- `SQLITE_LIMIT_ATTACHED = 0`, and the sqlite3 module's rule of one statement per execute():
  `"SELECT 1; DROP TABLE t"` is refused before the first statement runs;
- a wall-clock deadline checked by a progress handler every `_PROGRESS_OPS` virtual-machine
  instructions, which interrupts the query (also while rows are being fetched);
- caps on the rows fetched and on their size in bytes (approximately what the Python objects
  take), on the longest string or blob sqlite may build (`SQLITE_LIMIT_LENGTH`: stops
  `zeroblob(1e9)` and friends) and on sqlite's heap (`PRAGMA hard_heap_limit`, with temp tables
  and sorts kept in memory so a huge ORDER BY cannot fill the disk either). Rows are fetched in
  chunks small enough that even rows of the longest values allowed cannot overshoot the byte
  cap by more than one row, so the cap bounds the memory a result takes, not just its count.

The deadline is checked between VM instructions, so one instruction that runs long by itself
(`instr()` of a megabyte needle in a megabyte haystack is one step of ~10 s) is not interrupted
here: sqlexec.pool runs queries in worker processes and kills and replaces a worker whose query
runs past the limit. The pool also caps each worker's address space (`cap_memory`, RLIMIT_AS),
so memory that no cap above accounts for fails as an out-of-memory of that one query.

Every failure is a `SqlError` subclass whose message names what happened: `SqlRefused` (the
authorizer or the one-statement rule said no, or the text cannot be given to sqlite: a lone
surrogate, not a string), `SqlTimeout`, `SqlLimitExceeded` (rows, bytes, value length, out of
memory), or plain `SqlError` (sqlite's own message, e.g. "no such column: x").

Connections are cached per database per thread (`connection_for`) and reused across queries,
so a reward worker opens each database once. Text that is not valid UTF-8 is decoded with
errors ignored, as the Spider evaluator does.
"""
from __future__ import annotations

import math
import resource
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

# Progress-handler period in sqlite VM instructions: ~10-50 us of work between deadline checks.
_PROGRESS_OPS = 1000
_FETCH_BATCH = 1024
_MAX_CACHED_CONNECTIONS = 32

# sqlite authorizer action codes that a read-only query needs; everything else is denied.
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              sqlite3.SQLITE_RECURSIVE})
# Functions refused even though SQLITE_FUNCTION is allowed. load_extension is also disabled by
# the sqlite3 module; the rest exist only in some builds (shell, fts3) and touch files or memory.
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit",
                               "fsdir", "sqlite_dbpage", "zipfile", "sqlar_compress",
                               "sqlar_uncompress"})
_ACTION_NAMES = {getattr(sqlite3, f"SQLITE_{n}"): n for n in (
    "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER "
    "CREATE_TEMP_VIEW CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX "
    "DROP_TEMP_TABLE DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA READ "
    "SELECT TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE REINDEX ANALYZE CREATE_VTABLE "
    "DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE").split()}


@dataclass(frozen=True)
class Limits:
    """What one query may use. `heap_bytes` is sqlite's hard heap limit, which sqlite keeps per
    *process* and which its PRAGMA can only lower: the smallest value any query asked for
    stays in force for the whole process, so ask for a small one only in worker processes
    (sqlexec.pool), never in a process that uses sqlite for other work. The last two fields
    apply in sqlexec.pool's worker processes only."""
    timeout_s: float = 30.0           # the paper's limit
    max_rows: int = 1_000_000
    max_bytes: int = 256 * 2**20      # approximate memory of the fetched rows
    max_value_bytes: int = 16 * 2**20  # SQLITE_LIMIT_LENGTH: longest string/blob sqlite builds
    heap_bytes: int = 2 * 2**30
    memory_bytes: int = 4 * 2**30     # address space a pool worker may add to what it starts with
    kill_grace_s: float = 1.0         # a pool worker still running this long past timeout_s is killed


class SqlError(Exception):
    """The query failed; the message is sqlite's (or says which guard stopped it)."""


class SqlRefused(SqlError):
    """The sandbox refused the statement before running it (write, ATTACH, PRAGMA, ...)."""


class SqlTimeout(SqlError):
    """The query ran past its time limit and was interrupted."""


class SqlLimitExceeded(SqlError):
    """The result (rows, bytes, one value's length) or the memory went over its cap."""


# CPython object sizes, roughly: a tuple header and slot per value, a str/bytes header, a number.
_ROW_BYTES, _SLOT_BYTES, _TEXT_BYTES, _NUMBER_BYTES = 56, 8, 49, 32


def _row_bytes(row: tuple) -> int:
    size = _ROW_BYTES + _SLOT_BYTES * len(row)
    for value in row:
        if isinstance(value, (str, bytes)):
            size += len(value) + _TEXT_BYTES
        elif value is not None:
            size += _NUMBER_BYTES
    return size


# Set by `cap_memory` in a pool worker: the address space it may add (None: not capped).
_memory_cap: int | None = None


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def cap_memory(extra_bytes: int) -> None:
    """Limit this process's address space (RLIMIT_AS) to its current size plus `extra_bytes`, so
    an allocation past it fails (a MemoryError, or SQLITE_NOMEM inside sqlite: an out-of-memory of
    the query) instead of waking the machine's out-of-memory killer. For worker processes only
    (sqlexec.pool calls it once at start); Linux (/proc)."""
    global _memory_cap
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _vm_size_bytes() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    _memory_cap = extra_bytes


def _out_of_memory(limits: "Limits") -> str:
    # sqlite reports its heap limit and a failed system allocation alike (SQLITE_NOMEM), and the
    # sqlite3 module raises the same MemoryError for both and for its own allocations: name both.
    cap = (f"this worker process's memory cap of {_memory_cap} bytes" if _memory_cap is not None
           else "the memory this process could get")
    return f"out of memory: over sqlite's heap limit of {limits.heap_bytes} bytes or {cap}"


def decode_text(raw: bytes) -> str:
    """sqlite TEXT to str, dropping bytes that are not UTF-8 (as Spider's exec_eval.py does)."""
    return raw.decode(errors="ignore")


def readonly_uri(db_path: str | Path, immutable: bool = True) -> str:
    """sqlite URI that opens `db_path` read-only (percent-encoded, so any file name works)."""
    return Path(db_path).resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


class SandboxConnection:
    """One read-only connection to one database with the guards above. Not thread-safe (sqlite3
    connections refuse other threads); use `connection_for` to get this thread's cached one."""

    def __init__(self, db_path: str | Path, immutable: bool = True):
        self.db_path = str(db_path)
        if not Path(db_path).is_file():
            raise SqlError(f"unable to open database file: {db_path} does not exist")
        try:
            self._conn = sqlite3.connect(readonly_uri(db_path, immutable), uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise SqlError(f"unable to open database file {db_path}: {exc}") from exc
        self._conn.text_factory = decode_text
        self._conn.execute("PRAGMA temp_store = MEMORY")  # sorts/temp tables count against the heap cap
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self._heap_bytes = None
        self._deadline = math.inf
        self._timed_out = False
        self._denied: str | None = None
        self._conn.set_authorizer(self._authorize)
        self._conn.set_progress_handler(self._progress, _PROGRESS_OPS)

    def _authorize(self, action, arg1, arg2, db_name, source):
        if action in _ALLOWED_ACTIONS and not (action == sqlite3.SQLITE_FUNCTION
                                               and arg2.lower() in _DENIED_FUNCTIONS):
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        detail = " ".join(str(a) for a in (arg1, arg2) if a is not None)
        self._denied = f"{what} {detail}".strip()
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        if time.monotonic() > self._deadline:
            self._timed_out = True
            return 1  # non-zero interrupts the running statement
        return 0

    def _apply_limits(self, limits: Limits) -> None:
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
        if self._heap_bytes != limits.heap_bytes:
            # The authorizer would refuse our own PRAGMA: lift it for this one statement.
            self._conn.set_authorizer(None)
            try:
                self._conn.execute(f"PRAGMA hard_heap_limit = {int(limits.heap_bytes)}")
            finally:
                self._conn.set_authorizer(self._authorize)
            self._heap_bytes = limits.heap_bytes

    def execute(self, sql: str, limits: Limits = Limits()) -> list[tuple]:
        """Run one SELECT and return all its rows; raises a `SqlError` subclass on any failure."""
        if not isinstance(sql, str):
            raise SqlRefused(f"SQL must be text, got {type(sql).__name__}")
        if not sql.strip():
            raise SqlRefused("empty SQL")
        self._apply_limits(limits)
        self._denied, self._timed_out = None, False
        self._deadline = time.monotonic() + limits.timeout_s
        cursor = None
        try:
            cursor = self._conn.execute(sql)
            if cursor.description is None:
                raise SqlRefused("not a query: the statement returns no columns")
            # The next fetch may bring rows of the longest values allowed: fetch no more of them
            # than the rest of the byte cap holds (at least one), so the cap bounds memory.
            widest_row = _ROW_BYTES + len(cursor.description) * (_SLOT_BYTES + _TEXT_BYTES + limits.max_value_bytes)
            rows, n_bytes = [], 0
            while batch := cursor.fetchmany(max(1, min(_FETCH_BATCH, (limits.max_bytes - n_bytes) // widest_row))):
                rows.extend(batch)
                if len(rows) > limits.max_rows:
                    raise SqlLimitExceeded(f"result has more than {limits.max_rows} rows (row cap)")
                n_bytes += sum(_row_bytes(row) for row in batch)
                if n_bytes > limits.max_bytes:
                    raise SqlLimitExceeded(f"result is larger than {limits.max_bytes} bytes (byte cap)")
            return rows
        except sqlite3.Error as exc:
            raise self._classify(exc, limits) from exc
        except UnicodeEncodeError as exc:  # a lone surrogate: the text has no UTF-8 form for sqlite
            raise SqlRefused(f"refused SQL that is not valid Unicode text: {exc.reason} at character "
                             f"{exc.start}") from exc
        except MemoryError as exc:
            rows = batch = None  # free the partial result before building the message
            raise SqlLimitExceeded(_out_of_memory(limits)) from exc
        finally:
            rows = batch = None  # a raised error's traceback keeps this frame, and so the rows, alive
            self._deadline = math.inf
            if cursor is not None:
                cursor.close()

    def _classify(self, exc: sqlite3.Error, limits: Limits) -> SqlError:
        message = str(exc) or type(exc).__name__
        if self._timed_out:
            return SqlTimeout(f"interrupted after the {limits.timeout_s:g} s time limit")
        if self._denied is not None:
            return SqlRefused(f"refused {self._denied} (read-only sandbox): {message}")
        if isinstance(exc, sqlite3.DataError):  # SQLITE_TOOBIG: over SQLITE_LIMIT_LENGTH
            return SqlLimitExceeded(f"a value longer than {limits.max_value_bytes} bytes: {message}")
        if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in message:
            return SqlRefused(f"refused multiple statements: {message}")
        return SqlError(message)

    def close(self) -> None:
        self._conn.close()


_local = threading.local()


def connection_for(db_path: str | Path, immutable: bool = True) -> SandboxConnection:
    """This thread's cached connection to `db_path` (opened on first use, least recently used
    closed beyond `_MAX_CACHED_CONNECTIONS`)."""
    cache: OrderedDict = getattr(_local, "cache", None) or OrderedDict()
    _local.cache = cache
    key = (str(db_path), immutable)
    conn = cache.get(key)
    if conn is None:
        conn = cache[key] = SandboxConnection(db_path, immutable)
        if len(cache) > _MAX_CACHED_CONNECTIONS:
            cache.popitem(last=False)[1].close()
    cache.move_to_end(key)
    return conn


def execute(db_path: str | Path, sql: str, limits: Limits = Limits(), immutable: bool = True) -> list[tuple]:
    """Run one read-only query on `db_path` through this thread's cached sandbox connection."""
    return connection_for(db_path, immutable).execute(sql, limits)

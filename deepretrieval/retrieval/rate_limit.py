"""A request-rate limiter shared by every thread and every process that uses the same file.

    limiter = RateLimiter.for_service("ncbi", max_requests=3)        # 3 requests per second
    with limiter.slot():                                            # blocks until allowed
        send_the_request()

NCBI allows 3 requests/s per IP without an API key and 10 with one; it counts the requests that
*arrive* at its servers. A limiter that only spaces out the moments it lets requests go cannot
promise that: network and scheduling delays differ from request to request, so two requests let
go 1.0 s apart may arrive 0.9 s apart. This limiter keeps `max_requests` slots; a request holds a
slot while it is in flight, and the slot becomes free again `period` seconds after the request
*finished* (its response arrived or it failed). A request finishes after it reached the server, and
the next user of the slot starts after that, so any `max_requests + 1` requests are at least
`period` apart at the server too, whatever the delays. (This is a token bucket of depth
`max_requests` whose tokens come back one period after their request completes.) The price is a
throughput of `max_requests` per (`period` + latency) instead of per `period`.

The slots live in a small file (`max_requests` float64 "free at" times on the system-wide
monotonic clock) guarded by `fcntl.flock`, so unrelated processes — reward workers, training
ranks, a second run — share one budget when they use the same path; `for_service` puts it in the
temp folder, one file per service and user. A slot taken by a process that dies mid-request frees
itself after `hold_limit` seconds. POSIX only (fcntl); Linux's `time.monotonic` is system-wide, which
is what lets processes compare their times.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import tempfile
import threading
import time
from pathlib import Path


class RateLimiter:
    """`max_requests` requests per `period` seconds, counted from completion; process-safe."""

    def __init__(self, path: str | os.PathLike, max_requests: int, period: float = 1.0,
                 hold_limit: float = 300.0):
        if max_requests < 1 or period <= 0:
            raise ValueError(f"need max_requests >= 1 and period > 0, got {max_requests}, {period}")
        self.path = Path(path)
        self.max_requests = int(max_requests)
        self.period = float(period)
        self.hold_limit = float(hold_limit)   # a slot held longer than this is taken to be orphaned
        self._format = f"<{self.max_requests}d"
        self._size = struct.calcsize(self._format)
        self._thread_lock = threading.Lock()  # flock is per open file; threads share our one fd
        self._fd: int | None = None
        self._fd_pid = -1

    @classmethod
    def for_service(cls, service: str, max_requests: int, period: float = 1.0,
                    directory: str | os.PathLike | None = None) -> "RateLimiter":
        """The limiter every process of this user shares for `service` (and this rate)."""
        directory = Path(directory or tempfile.gettempdir())
        name = f"deepretrieval-ratelimit-{service}-{max_requests}per{period:g}s-uid{os.getuid()}"
        return cls(directory / name, max_requests, period)

    def _file(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():   # a forked child opens its own
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    @contextlib.contextmanager
    def _locked_slots(self):
        """Yields the slot list under both locks; what the caller leaves in it is written back."""
        with self._thread_lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, self._size, 0)
                # A new, foreign-sized or torn file counts as all slots free.
                slots = list(struct.unpack(self._format, raw)) if len(raw) == self._size \
                    else [0.0] * self.max_requests
                yield slots
                os.pwrite(fd, struct.pack(self._format, *slots), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def acquire(self) -> int:
        """Blocks until a slot is free, takes it and returns its index; pair with `release`."""
        while True:
            with self._locked_slots() as slots:
                now = time.monotonic()
                index = min(range(self.max_requests), key=slots.__getitem__)
                wait = slots[index] - now
                if wait <= 0:
                    slots[index] = now + self.hold_limit   # in flight
                    return index
            time.sleep(min(wait, self.period))

    def release(self, index: int) -> None:
        """The request on slot `index` finished (or failed): free the slot one period from now."""
        with self._locked_slots() as slots:
            slots[index] = time.monotonic() + self.period

    @contextlib.contextmanager
    def slot(self):
        index = self.acquire()
        try:
            yield
        finally:
            self.release(index)

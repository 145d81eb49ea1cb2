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

The slots live in a small file guarded by `fcntl.flock`, so unrelated processes — reward workers,
training ranks, a second run — share one budget when they use the same path; `for_service` puts it
in the temp folder, one file per service and user. Each slot records when it is free (on the
system-wide monotonic clock) and, while a request is in flight, which process holds it (pid and
start time, so a recycled pid is not taken for the holder). A process killed mid-request (kill -9,
the OOM killer) cannot free its slots; the next process to ask for a slot sees that the holder is
gone, frees the slot one period from then (the dead request may have just reached the server) and
logs a warning; a waiter looks every 0.1 s while all slots are in flight. A slot held longer than `hold_limit` seconds is taken to be orphaned too (a holder this
process cannot see). POSIX only (fcntl); Linux's `time.monotonic` is system-wide, which is what
lets processes compare their times, and the processes sharing a file must see each other's pids
(one machine, one PID namespace).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_POLL = 0.1         # seconds between checks while every slot is in flight


def _start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None when it is gone
    or a zombie; 0 for a live process where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:                 # no /proc: existence is all we can check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:     # exists, owned by someone else
            pass
        return 0
    fields = stat.rsplit(b")", 1)[1].split()   # after "pid (comm)": state is field 3, starttime 22
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


@dataclasses.dataclass
class _Slots:
    """The file's content: per slot, when it is free (monotonic s) and, while a request holds it,
    the holder's pid and start time (pid 0: nobody)."""
    free_at: list[float]
    pid: list[int]
    started: list[int]

    def set(self, index: int, free_at: float, pid: int = 0, started: int = 0) -> None:
        self.free_at[index], self.pid[index], self.started[index] = free_at, pid, started


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
        self._format = f"<{self.max_requests}d{self.max_requests}q{self.max_requests}q"   # _Slots
        self._size = struct.calcsize(self._format)
        self._thread_lock = threading.Lock()  # flock is per open file; threads share our one fd
        self._fd: int | None = None
        self._fd_pid = -1
        self._me = (0, 0)                     # (pid, start time) written into the slots we hold

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
            self._me = (self._fd_pid, _start_time(self._fd_pid) or 0)
        return self._fd

    @contextlib.contextmanager
    def _locked_slots(self):
        """Yields the slots under both locks; what the caller leaves in them is written back."""
        with self._thread_lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, self._size, 0)
                # A new, foreign-sized or torn file counts as all slots free.
                flat = struct.unpack(self._format, raw) if len(raw) == self._size \
                    else (0,) * (3 * self.max_requests)
                n = self.max_requests
                slots = _Slots(list(flat[:n]), list(flat[n:2 * n]), list(flat[2 * n:]))
                yield slots
                os.pwrite(fd, struct.pack(self._format, *slots.free_at, *slots.pid, *slots.started), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _free_orphans(self, slots: _Slots, now: float) -> None:
        """Frees, one period from now, the in-flight slots whose holder process is gone."""
        for index, pid in enumerate(slots.pid):
            if pid and (pid, slots.started[index]) != self._me and _start_time(pid) != slots.started[index]:
                log.warning("rate limiter %s: slot %d was held by process %d, which is gone (killed "
                            "mid-request?); freeing it", self.path, index, pid)
                slots.set(index, now + self.period)

    def acquire(self) -> int:
        """Blocks until a slot is free, takes it and returns its index; pair with `release`."""
        while True:
            with self._locked_slots() as slots:
                now = time.monotonic()
                self._free_orphans(slots, now)
                index = min(range(self.max_requests), key=slots.free_at.__getitem__)
                wait = slots.free_at[index] - now
                if wait <= 0:
                    if slots.pid[index]:
                        log.warning("rate limiter %s: slot %d was held by process %d for over %g s; "
                                    "taking it as orphaned", self.path, index, slots.pid[index],
                                    self.hold_limit)
                    slots.set(index, now + self.hold_limit, *self._me)   # in flight
                    return index
                in_flight = slots.pid[index] != 0
            # every slot in flight: look again soon, in case a holder dies
            time.sleep(min(wait, _POLL) if in_flight else wait)

    def release(self, index: int) -> None:
        """The request on slot `index` finished (or failed): free the slot one period from now."""
        with self._locked_slots() as slots:
            if (slots.pid[index], slots.started[index]) == self._me:   # not if taken as orphaned meanwhile
                slots.set(index, time.monotonic() + self.period)

    @contextlib.contextmanager
    def slot(self):
        index = self.acquire()
        try:
            yield
        finally:
            self.release(index)

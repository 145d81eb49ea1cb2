"""Evaluate a batch of (database, prediction, gold) triples in worker processes that survive the queries.

    from deepretrieval.sqlexec.pool import SqlItem, SqlPool, evaluate_batch
    items = [SqlItem(db_path, pred_sql, gold_sql), ...]
    outcomes = evaluate_batch(items, workers=8, timeout_s=30)      # one-shot, list[Outcome] in order

    with SqlPool(workers=8, comparison="spider") as pool:          # a reward function keeps one
        for batch in batches:                                      # pool for the whole run: the
            outcomes = pool.evaluate(batch)                        # workers keep their connections

Items with the same database and gold query (the n completions of one prompt) form a group
whose gold query runs once. Groups are sorted by database and cut into a few chunks per worker,
so each task reuses the worker's cached connection and the per-task overhead is paid per
chunk, not per query. Processes, not threads: the sqlite3 module takes the GIL to build every
row and for every progress-handler call, so threads would mostly wait on each other; a
runaway query stays in its own process; and sqlite's heap limit is per process.

Model-written SQL must never end a run or lose a result, so the pool supervises its workers:
- each worker writes, before every query, which one it starts and when into a slot of shared
  memory; a query still running `limits.kill_grace_s` past `limits.timeout_s` (one sqlite step
  that never returns to the progress handler) has its worker killed (SIGKILL) and replaced, and
  is a timeout;
- a worker that dies (the out-of-memory killer, a crash) is replaced and the query it was
  running is an error that says how it died;
- the other queries of that worker's chunk go back to the queue, so every item gets an Outcome
  and the pool goes on (a dead worker never breaks the pool, unlike concurrent.futures);
- each worker's address space is capped (`limits.memory_bytes`, sandbox.cap_memory), so a
  query that needs too much memory fails by itself instead of waking the OOM killer.
One manager thread runs the workers, so several threads may call `evaluate` at once (a reward
pool scores slices of a batch in parallel) and their chunks share the workers.

Workers start with "forkserver" by default so they never inherit a trainer's CUDA state, big
memory or open sqlite connections (sqlite forbids carrying a connection across fork). Like
"spawn", that re-imports the main script in each worker: run from a file whose work sits
under `if __name__ == "__main__":` (not from stdin), or pass start_method="fork".
`workers=0` evaluates in this process, serially, with none of the supervision above.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Sequence

from deepretrieval.sqlexec.compare import Comparison
from deepretrieval.sqlexec.outcome import Outcome, Status, evaluate_group
from deepretrieval.sqlexec.sandbox import Limits, cap_memory

_CHUNKS_PER_WORKER = 4
_DEATHS_BEFORE_START = 3  # workers dying before their first query this often in a row: a broken setup

# A group: (db_path, gold_sql, [(item index, pred_sql), ...]); a chunk: a list of groups.
_Group = tuple[str, str, list[tuple[int, str]]]
_Chunk = list[_Group]


@dataclass(frozen=True)
class SqlItem:
    db_path: str | Path
    pred_sql: str
    gold_sql: str


def _group(items: Sequence[SqlItem]) -> list[_Group]:
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for index, item in enumerate(items):
        groups.setdefault((str(item.db_path), item.gold_sql), []).append((index, item.pred_sql))
    return sorted(((db, gold, preds) for (db, gold), preds in groups.items()), key=lambda g: g[0])


def _chunks(groups: list[_Group], n_chunks: int) -> list[_Chunk]:
    size = max(1, -(-len(groups) // max(1, n_chunks)))
    return [groups[i:i + size] for i in range(0, len(groups), size)]


def _group_outcomes(group: _Group, rules: tuple, on_query: Callable[[int], None] | None = None) -> list[Outcome]:
    db_path, gold_sql, preds = group
    comparison, limits, drop_distinct = rules
    return evaluate_group(db_path, gold_sql, [sql for _, sql in preds], comparison=comparison, limits=limits,
                          drop_distinct=drop_distinct, on_query=on_query)


def _worker_main(conn, slot, rules: tuple) -> None:
    """A worker process: run chunks until told to stop, one message of Outcomes per group.
    slot = [start time (time.monotonic, system-wide), group, query (0 = gold, i + 1 = pred i)]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C stops the pool's process; workers then see EOF
    cap_memory(rules[1].memory_bytes)
    try:
        while (chunk := conn.recv()) is not None:
            for g, group in enumerate(chunk):
                def starting(q: int, g: int = g) -> None:
                    slot[0] = time.monotonic()   # the time first: the pool reads a position only post mortem
                    slot[1], slot[2] = g, q
                conn.send(_group_outcomes(group, rules, starting))
    except (EOFError, BrokenPipeError):   # the pool's process is gone
        return


class _Job:
    """One `evaluate` call: its outcomes, filled in by the manager thread."""

    def __init__(self, n_items: int, progress: bool):
        self.outcomes: list[Outcome | None] = [None] * n_items
        self.left = n_items
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=n_items, desc="sql", unit="query")

    def settle(self, pairs: list[tuple[int, Outcome]]) -> None:
        for index, outcome in pairs:
            self.outcomes[index] = outcome
        self.left -= len(pairs)
        if self.bar is not None:
            self.bar.update(len(pairs))
        if self.left == 0:
            self.done.set()


class _Worker:
    """One worker process, its pipe, its progress slot and the chunk it is running."""

    def __init__(self, ctx, rules: tuple):
        self.conn, child_conn = ctx.Pipe()
        self.slot = ctx.RawArray("d", 3)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, self.slot, rules), daemon=True,
                                   name="sqlexec-worker")
        self.process.start()
        child_conn.close()
        self.job: _Job | None = None
        self.chunk: _Chunk = []
        self.reported = 0        # groups of the chunk whose outcomes have arrived

    def give(self, job: _Job, chunk: _Chunk) -> None:
        self.job, self.chunk, self.reported = job, chunk, 0
        self.slot[0], self.slot[1], self.slot[2] = time.monotonic(), -1, 0   # group -1: not started yet
        self.conn.send(chunk)


def _death(exitcode: int | None) -> str:
    if exitcode == -signal.SIGKILL:
        return "killed by SIGKILL, e.g. by the out-of-memory killer"
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}; its error is on stderr"


class SqlPool:
    """A reusable set of supervised worker processes that evaluate SQL predictions (arguments as
    sqlexec.outcome.evaluate_group's, plus the number of workers). Workers start on first use."""

    def __init__(self, workers: int | None = None, *, comparison: Comparison = "spider",
                 limits: Limits = Limits(), drop_distinct: bool = False, start_method: str = "forkserver"):
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in this process), got {self.workers}")
        self.limits = limits
        self._rules = (comparison, limits, drop_distinct)
        self._ctx = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()            # guards _queue, _closed and the manager's start
        self._queue: deque[tuple[_Job, _Chunk]] = deque()
        self._closed = False
        self._pool: list[_Worker] = []           # owned by the manager thread once it runs
        self._manager: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._deaths_before_start = 0
        self._failure: BaseException | None = None   # why the manager thread stopped, if it failed

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring; they change when one is replaced)."""
        return [w.process.pid for w in list(self._pool)]

    def evaluate(self, items: Sequence[SqlItem], progress: bool = False) -> list[Outcome]:
        """One Outcome per item, in the items' order."""
        groups = _group(items)
        job = _Job(len(items), progress)
        try:
            if self.workers == 0:
                for group in groups:
                    job.settle([(i, o) for (i, _), o in zip(group[2], _group_outcomes(group, self._rules))])
                return job.outcomes
            if not items:
                return []
            with self._lock:
                if self._closed:
                    raise RuntimeError("SqlPool is closed") from self._failure
                if self._manager is None:
                    self._manager = threading.Thread(target=self._manage, name="sqlexec-pool", daemon=True)
                    self._manager.start()
                self._queue.extend((job, chunk) for chunk in _chunks(groups, self.workers * _CHUNKS_PER_WORKER))
                os.write(self._wake_w, b"x")   # under the lock: close() shuts the pipe only after it
            job.done.wait()
            if job.error is not None:
                raise job.error
            return job.outcomes
        finally:
            if job.bar is not None:
                job.bar.close()

    # ---- the manager thread -------------------------------------------------------------
    def _manage(self) -> None:
        try:
            self._pool = [_Worker(self._ctx, self._rules) for _ in range(self.workers)]
            while not self._closed:
                self._dispatch()
                self._wait_and_handle()
        except BaseException as exc:   # never leave a caller waiting: every job gets the failure
            with self._lock:
                self._closed, self._failure = True, exc
        finally:
            self._stop_workers()
            self._fail_all(self._failure or RuntimeError("SqlPool was closed while evaluating"))

    def _dispatch(self) -> None:
        for i, w in enumerate(self._pool):
            if w.job is None and not w.process.is_alive():   # died while idle
                self._pool[i] = w = self._replace(w)
            with self._lock:
                if w.job is not None or not self._queue:
                    continue
                job, chunk = self._queue.popleft()
            try:
                w.give(job, chunk)
            except OSError:   # it died just now: its sentinel is ready, and _recover queues the chunk again
                pass

    def _wait_and_handle(self) -> None:
        busy = [w for w in self._pool if w.job is not None]
        kill_after = self.limits.timeout_s + self.limits.kill_grace_s
        timeout = None
        if busy:  # starts only move later, so waking at this time is never late
            timeout = max(0.0, min(w.slot[0] for w in busy) + kill_after - time.monotonic())
        ready = set(wait([self._wake_r] + [w.conn for w in busy] + [w.process.sentinel for w in self._pool],
                         timeout))
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        for i, w in enumerate(self._pool):
            if w.conn in ready or w.process.sentinel in ready:
                if not self._receive(w):
                    w.process.join()
                    self._pool[i] = self._recover(w, killed=False)
            elif w.job is not None and time.monotonic() > w.slot[0] + kill_after:
                w.process.kill()
                w.process.join()
                self._receive(w)     # outcomes sent before the kill are kept
                self._pool[i] = self._recover(w, killed=True)

    def _receive(self, w: _Worker) -> bool:
        """Take every message waiting from `w`; False when its pipe has closed (it died)."""
        try:
            while w.job is not None and w.conn.poll():
                outcomes = w.conn.recv()
                w.job.settle([(i, o) for (i, _), o in zip(w.chunk[w.reported][2], outcomes)])
                self._deaths_before_start = 0
                w.reported += 1
                if w.reported == len(w.chunk):
                    w.job, w.chunk = None, []
        except (EOFError, OSError):
            return False
        return w.process.is_alive() or w.job is None

    def _recover(self, w: _Worker, killed: bool) -> _Worker:
        """Settle the query a killed or dead worker was running, queue the rest of its chunk again,
        and start its replacement."""
        if w.job is not None:
            started, g, q = w.slot[0], int(w.slot[1]), int(w.slot[2])
            job, chunk = w.job, w.chunk[w.reported:]
            elapsed = time.monotonic() - started
            overran = elapsed > self.limits.timeout_s + self.limits.kill_grace_s
            if g == w.reported and (overran or not killed):
                chunk = self._blame(job, chunk, q, killed, w.process.exitcode, elapsed)
            elif g < 0 and not killed:
                self._deaths_before_start += 1
                if self._deaths_before_start >= _DEATHS_BEFORE_START:
                    raise RuntimeError(f"sqlexec worker processes keep dying before their first query "
                                       f"({_death(w.process.exitcode)})")
            if chunk:
                with self._lock:
                    self._queue.appendleft((job, chunk))
        return self._replace(w)

    def _blame(self, job: _Job, chunk: _Chunk, q: int, killed: bool, exitcode: int | None,
               elapsed: float) -> _Chunk:
        """Settle query q of the chunk's first group (0 = its gold query, i + 1 = prediction i);
        returns what is left to run."""
        db_path, gold_sql, preds = chunk[0]
        if killed:
            what = (f"killed after the {self.limits.timeout_s:g} s time limit (+{self.limits.kill_grace_s:g} s "
                    f"grace): still running, e.g. in one sqlite step that the progress handler cannot interrupt, "
                    f"so its worker process was killed and replaced")
        else:
            what = f"the worker process died while running it ({_death(exitcode)}) and was replaced"
        if q == 0:
            status = Status.GOLD_TIMEOUT if killed else Status.GOLD_ERROR
            outcome = Outcome(status, f"gold query: {what}", seconds=elapsed)
            job.settle([(index, outcome) for index, _ in preds])
            return chunk[1:]
        status = Status.PRED_TIMEOUT if killed else Status.PRED_ERROR
        job.settle([(preds[q - 1][0], Outcome(status, what, seconds=elapsed))])
        rest = preds[:q - 1] + preds[q:]
        return ([(db_path, gold_sql, rest)] if rest else []) + chunk[1:]

    def _replace(self, w: _Worker) -> _Worker:
        w.conn.close()
        return _Worker(self._ctx, self._rules)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            jobs = {id(job): job for job, _ in self._queue}
            self._queue.clear()
        jobs.update({id(w.job): w.job for w in self._pool if w.job is not None})
        for job in jobs.values():
            if not job.done.is_set():
                job.error = exc
                job.done.set()

    def _stop_workers(self) -> None:
        for w in self._pool:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._pool:
            w.process.join(timeout=1.0)
            if w.process.is_alive():   # still inside a query: no need to wait for it
                w.process.kill()
                w.process.join()
            w.conn.close()

    def close(self) -> None:
        """Stop the workers (a query still running is killed after a second); idempotent."""
        with self._lock:
            if self._wake_w < 0:
                return
            self._closed = True
            os.write(self._wake_w, b"x")
        if self._manager is not None:
            self._manager.join()
        with self._lock:
            if self._wake_w >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def __enter__(self) -> "SqlPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def evaluate_batch(items: Sequence[SqlItem], *, workers: int | None = None, timeout_s: float | None = None,
                   comparison: Comparison = "spider", limits: Limits = Limits(), drop_distinct: bool = False,
                   progress: bool = False) -> list[Outcome]:
    """Evaluate `items` with a pool that lives for this call only (see SqlPool to keep one)."""
    if timeout_s is not None:
        limits = dataclasses.replace(limits, timeout_s=timeout_s)
    with SqlPool(workers, comparison=comparison, limits=limits, drop_distinct=drop_distinct) as pool:
        return pool.evaluate(items, progress=progress)

"""Evaluate a batch of (database, prediction, gold) triples in parallel worker processes.

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
Workers start with "forkserver" by default so they never inherit a trainer's CUDA state, big
memory or open sqlite connections (sqlite forbids carrying a connection across fork). Like
"spawn", that re-imports the main script in each worker: run from a file whose work sits
under `if __name__ == "__main__":` (not from stdin), or pass start_method="fork".
`workers <= 1` evaluates in this process, serially.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deepretrieval.sqlexec.compare import Comparison
from deepretrieval.sqlexec.outcome import Outcome, evaluate_group
from deepretrieval.sqlexec.sandbox import Limits

_CHUNKS_PER_WORKER = 4

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


def _evaluate_chunk(chunk: _Chunk, comparison: Comparison, limits: Limits,
                    drop_distinct: bool) -> list[tuple[int, Outcome]]:
    results = []
    for db_path, gold_sql, preds in chunk:
        outcomes = evaluate_group(db_path, gold_sql, [sql for _, sql in preds], comparison=comparison,
                                  limits=limits, drop_distinct=drop_distinct)
        results.extend((index, outcome) for (index, _), outcome in zip(preds, outcomes))
    return results


class SqlPool:
    """A reusable set of worker processes that evaluate SQL predictions (arguments as
    sqlexec.outcome.evaluate_group's, plus the number of workers)."""

    def __init__(self, workers: int | None = None, *, comparison: Comparison = "spider",
                 limits: Limits = Limits(), drop_distinct: bool = False, start_method: str = "forkserver"):
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._rules = (comparison, limits, drop_distinct)
        self._executor = None
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(start_method))

    def evaluate(self, items: Sequence[SqlItem], progress: bool = False) -> list[Outcome]:
        """One Outcome per item, in the items' order."""
        groups = _group(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(items), desc="sql", unit="query")
        try:
            if self._executor is None:
                done = (_evaluate_chunk(chunk, *self._rules) for chunk in _chunks(groups, len(groups)))
            else:
                futures = [self._executor.submit(_evaluate_chunk, chunk, *self._rules)
                           for chunk in _chunks(groups, self.workers * _CHUNKS_PER_WORKER)]
                done = (future.result() for future in as_completed(futures))
            for results in done:
                for index, outcome in results:
                    outcomes[index] = outcome
                if bar is not None:
                    bar.update(len(results))
        finally:
            if bar is not None:
                bar.close()
        return outcomes

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

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

"""Judge one predicted SQL query against the gold query on a database: an explicit `Outcome`.

    from deepretrieval.sqlexec.outcome import evaluate_prediction
    outcome = evaluate_prediction("database/pets_1/pets_1.sqlite", pred_sql, gold_sql, timeout_s=30)
    outcome.correct          # True only for Status.MATCH
    outcome.status.value     # "match" | "mismatch" | "pred_error" | "pred_timeout" | "gold_error" | "gold_timeout"
    outcome.message          # sqlite's message for errors and timeouts

The gold query runs first. If it fails or times out the example is a data problem: the
outcome is gold_error / gold_timeout, the prediction is not run, and it is never counted
correct (the original DeepRetrieval code, src/sql/spider.py, turns a 30 s timeout into an empty
result, so a double timeout, or a timed-out prediction against an empty gold result, scored
as correct). A prediction that is refused by the sandbox, fails, or hits a row/byte/heap cap
is pred_error; one that runs past the time limit is pred_timeout. Both are simply wrong.

`evaluate_group` runs one gold query once for several predictions (the n completions of one
prompt in a GRPO group); sqlexec.pool runs groups in parallel worker processes, which also turn
a query that outlives its worker (killed past its time limit, or dead) into one of these outcomes.
"""
from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from deepretrieval.sqlexec.compare import Comparison, gold_orders_rows, remove_distinct, results_match
from deepretrieval.sqlexec.sandbox import Limits, SqlError, SqlTimeout, execute


class Status(str, enum.Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    PRED_ERROR = "pred_error"
    PRED_TIMEOUT = "pred_timeout"
    GOLD_ERROR = "gold_error"
    GOLD_TIMEOUT = "gold_timeout"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


@dataclass(frozen=True)
class Outcome:
    status: Status
    message: str = ""               # why, for errors and timeouts (sqlite's or the sandbox's words)
    gold_rows: int | None = None    # row counts, when the query ran
    pred_rows: int | None = None
    seconds: float = 0.0            # wall time spent executing (gold + prediction)

    @property
    def correct(self) -> bool:
        return self.status is Status.MATCH

    @property
    def gold_problem(self) -> bool:
        """The data, not the prediction, is at fault: report it, never count it."""
        return self.status in (Status.GOLD_ERROR, Status.GOLD_TIMEOUT)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "status": self.status.value}


def _run(db_path, sql: str, limits: Limits) -> tuple[list[tuple] | None, SqlError | None]:
    try:
        return execute(db_path, sql, limits), None
    except SqlError as exc:
        return None, exc


def evaluate_group(db_path: str | Path, gold_sql: str, pred_sqls: Sequence[str], *,
                   comparison: Comparison = "spider", limits: Limits = Limits(),
                   drop_distinct: bool = False, on_query: Callable[[int], None] | None = None) -> list[Outcome]:
    """One Outcome per prediction, all against the same gold query (executed once).
    `drop_distinct` deletes DISTINCT from all queries first, as the official Spider evaluator
    does by default (see sqlexec.compare). `on_query(q)` is called before each execution, q = 0
    for the gold query and i + 1 for prediction i (how a pool worker says what it is running)."""
    if drop_distinct:
        gold_sql, pred_sqls = remove_distinct(gold_sql), [remove_distinct(sql) for sql in pred_sqls]
    on_query = on_query or (lambda q: None)
    on_query(0)
    start = time.perf_counter()
    gold, gold_exc = _run(db_path, gold_sql, limits)
    gold_seconds = time.perf_counter() - start
    if gold_exc is not None:
        status = Status.GOLD_TIMEOUT if isinstance(gold_exc, SqlTimeout) else Status.GOLD_ERROR
        outcome = Outcome(status, f"gold query: {gold_exc}", seconds=gold_seconds)
        return [outcome] * len(pred_sqls)
    order_matters = comparison == "spider" and gold_orders_rows(gold_sql)
    outcomes = []
    for q, pred_sql in enumerate(pred_sqls, start=1):
        on_query(q)
        start = time.perf_counter()
        pred, pred_exc = _run(db_path, pred_sql, limits)
        seconds = gold_seconds + time.perf_counter() - start
        if pred_exc is not None:
            status = Status.PRED_TIMEOUT if isinstance(pred_exc, SqlTimeout) else Status.PRED_ERROR
            outcomes.append(Outcome(status, str(pred_exc), gold_rows=len(gold), seconds=seconds))
            continue
        same = results_match(gold, pred, comparison=comparison, order_matters=order_matters)
        outcomes.append(Outcome(Status.MATCH if same else Status.MISMATCH, gold_rows=len(gold),
                                pred_rows=len(pred), seconds=seconds))
    return outcomes


def evaluate_prediction(db_path: str | Path, pred_sql: str, gold_sql: str, timeout_s: float | None = None, *,
                        comparison: Comparison = "spider", limits: Limits = Limits(),
                        drop_distinct: bool = False) -> Outcome:
    """Execute gold and prediction read-only on `db_path` and compare their results.

    `timeout_s` (per query; default `limits.timeout_s`, 30 s) overrides the limits' time limit;
    `comparison` is "spider" (multiset, column permutations, ordered when the gold query has a
    top-level ORDER BY) or "bird" (set of rows); `drop_distinct` as in `evaluate_group`."""
    if timeout_s is not None:
        limits = dataclasses.replace(limits, timeout_s=timeout_s)
    return evaluate_group(db_path, gold_sql, [pred_sql], comparison=comparison, limits=limits,
                          drop_distinct=drop_distinct)[0]

"""Sandboxed, time-limited sqlite execution and Spider/BIRD execution-accuracy evaluation.

The SQL reward's API:

    from deepretrieval.sqlexec import evaluate_prediction, SqlItem, SqlPool, Status
    outcome = evaluate_prediction(db_path, pred_sql, gold_sql, timeout_s=30)       # one
    with SqlPool(workers=8, comparison="spider") as pool:                          # batches
        outcomes = pool.evaluate([SqlItem(db_path, pred_sql, gold_sql), ...])
    reward = 1.0 if outcome.correct else 0.0; outcome.gold_problem -> report, never count

Modules: sandbox (read-only guarded execution), compare (Spider/BIRD result equality), outcome
(explicit outcomes of one prediction), pool (parallel batches in supervised worker processes: a
hard time limit, a memory cap, dead workers replaced), schema (prompt rendering), datasets
(Spider/BIRD loaders). `deepretrieval eval-sql` is the command line.
"""
from deepretrieval.sqlexec.compare import gold_orders_rows, remove_distinct, results_match
from deepretrieval.sqlexec.datasets import SqlExample, load_examples
from deepretrieval.sqlexec.outcome import STATUSES, Outcome, Status, evaluate_group, evaluate_prediction
from deepretrieval.sqlexec.pool import SqlItem, SqlPool, evaluate_batch
from deepretrieval.sqlexec.sandbox import Limits, SqlError, SqlLimitExceeded, SqlRefused, SqlTimeout, execute
from deepretrieval.sqlexec.schema import render_schema

__all__ = [
    "Limits", "Outcome", "STATUSES", "SqlError", "SqlExample", "SqlItem", "SqlLimitExceeded", "SqlPool",
    "SqlRefused", "SqlTimeout", "Status", "evaluate_batch", "evaluate_group", "evaluate_prediction",
    "execute", "gold_orders_rows", "load_examples", "remove_distinct", "render_schema", "results_match",
]

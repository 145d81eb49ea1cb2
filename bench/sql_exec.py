"""Throughput of SQL evaluation on all Spider dev gold SQL: serial vs parallel worker processes.

    python -m bench.sql_exec [--data builtin:spider] [--workers N] [--repeats 5]

Each of the 972 runnable dev examples is evaluated gold-vs-gold (the reward's work: run the
gold query, run the "prediction", compare; two executions each), and we report executed
queries per second for
- reference: the official evaluator's way, a fresh unguarded sqlite3 connection per query;
- serial: sqlexec in this process (sandbox guards, cached connections);
- parallel: sqlexec.SqlPool with N worker processes, already started (startup timed apart).
Printed ratios: parallel / serial and serial / reference. Best of `--repeats` passes.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import time

from bench.results_log import append_result
from deepretrieval.sqlexec.compare import gold_orders_rows, results_match
from deepretrieval.sqlexec.datasets import load_spider
from deepretrieval.sqlexec.pool import SqlItem, SqlPool
from deepretrieval.sqlexec.sandbox import decode_text
from deepretrieval.tasks.packaged_data import resolve_data_path



def _reference_pass(items: list[SqlItem]) -> None:
    """As test-suite-sql-eval's exec_eval.py: a new connection for every query."""
    for item in items:
        results = []
        for sql in (item.gold_sql, item.pred_sql):
            conn = sqlite3.connect(item.db_path)
            conn.text_factory = decode_text
            results.append(conn.execute(sql).fetchall())
            conn.close()
        assert results_match(results[0], results[1], order_matters=gold_orders_rows(item.gold_sql))


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:spider", help="Spider folder (default: the built-in dev set)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    examples = [e for e in load_spider(resolve_data_path(args.data)) if e.missing_reason is None]
    items = [SqlItem(str(e.db_path), e.gold_sql, e.gold_sql) for e in examples]
    n_queries = 2 * len(items)

    def check(outcomes):
        assert all(o.correct for o in outcomes), "a gold query did not match itself"

    ref_s = _best_seconds(lambda: _reference_pass(items), args.repeats)
    with SqlPool(workers=0) as serial:
        serial_s = _best_seconds(lambda: check(serial.evaluate(items)), args.repeats)
    start = time.perf_counter()
    with SqlPool(workers=args.workers) as parallel:
        check(parallel.evaluate(items[:args.workers]))  # workers started and importing done
        startup_s = time.perf_counter() - start
        parallel_s = _best_seconds(lambda: check(parallel.evaluate(items)), args.repeats)

    record = {
        "examples": len(items), "queries": n_queries, "workers": args.workers, "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other processes' load: parallel gains need idle cores
        "reference_qps": round(n_queries / ref_s, 1), "serial_qps": round(n_queries / serial_s, 1),
        "parallel_qps": round(n_queries / parallel_s, 1), "pool_startup_s": round(startup_s, 3),
        "parallel_over_serial": round(serial_s / parallel_s, 3),
        "serial_over_reference": round(ref_s / serial_s, 3),
    }
    print(f"{n_queries} queries ({len(items)} gold-vs-gold evaluations), best of {args.repeats}, "
          f"load average {record['loadavg_1m']} on {os.cpu_count()} cores:")
    print(f"  reference (new connection per query): {record['reference_qps']:>9.1f} queries/s")
    print(f"  sqlexec serial (sandbox, cached):     {record['serial_qps']:>9.1f} queries/s "
          f"= {record['serial_over_reference']:.2f}x reference")
    print(f"  sqlexec parallel ({args.workers} workers):         {record['parallel_qps']:>9.1f} queries/s "
          f"= {record['parallel_over_serial']:.2f}x serial (pool startup {startup_s:.2f} s, not counted)")
    append_result("sql_exec", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text-to-SQL (Spider, BIRD): question + schema -> SQL, rewarded by executing it read-only.

    task = TextToSQLTask.from_dataset("../shared/data/spider", "spider")
    rewards, details = task.reward(prompts, completions)      # completions answer {"sql": "..."}
    task.evaluate(sqls, "test")                               # {"exec_acc": ..., "gold_problems": ...}

Data: Spider / BIRD folders through sqlexec.datasets (our "train" = the dataset's train split,
"test" = its dev split, as the paper evaluates on dev; `split_map` changes that). Examples whose
database file is missing are skipped and listed in `task.skipped` (Spider's shared copy lacks
wta_1: 62 dev examples). The prompt shows the database's CREATE statements (sqlexec.schema) and,
for BIRD, the external-knowledge evidence.

Reward (pat-jj/DeepRetrieval code/verl/utils/reward_score/spider.py, `compute_score`): format =
think/answer structure AND a JSON answer with "sql" (`check_json_format`); format 0.1, else -2.
Answer = 1 when the prediction's rows equal the gold rows (sqlexec.outcome, Spider's or BIRD's
comparison), else 0 (also for SQL errors and timeouts). Total = 0.1 + answer when answer > 0,
else 0 (format right) or -2 — so a correct query earns 1.1 (the paper's scale).
BIRD partial credit (reward_score/bird.py, `calculate_answer_score`): answer = exact-match (0/1)
+ the fraction of the distinct gold rows the prediction returns, so an exact match earns 2.1 and a
query returning half of the gold rows 0.6. (That revision of bird.py executed the raw JSON text
instead of its "sql" value, so it could never score; we execute the parsed SQL.) A gold query that
fails or times out is a data problem: reward 0, `gold_problem` in the details, never correct.
Execution runs in sqlexec.pool worker processes (workers > 1), cached per (SQL, example).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from deepretrieval.sqlexec.datasets import load_examples
from deepretrieval.sqlexec.outcome import Status
from deepretrieval.sqlexec.pool import SqlItem, SqlPool
from deepretrieval.sqlexec.sandbox import Limits, SqlError, execute
from deepretrieval.sqlexec.schema import render_schema

from .answer_parsing import ParsedAnswer
from .classic_ir import ir_reward
from .scoring import CachedScorer
from .task import Task

log = logging.getLogger(__name__)
DEFAULT_SPLITS = {"train": "train", "test": "dev"}


@lru_cache(maxsize=256)
def _schema(db_path: str, sample_rows: int) -> str:
    return render_schema(db_path, sample_rows=sample_rows)


def row_recall(db_path: str, pred_sql: str, gold_sql: str) -> float:
    """Fraction of the distinct gold rows that the prediction returns (0 when either fails)."""
    try:
        gold = set(execute(db_path, gold_sql))
        pred = set(execute(db_path, pred_sql))
    except SqlError:
        return 0.0
    return len(gold & pred) / len(gold) if gold else 0.0


class TextToSQLTask(Task):
    name = "text_to_sql"
    template = "sql"

    def __init__(self, examples: dict[str, list[dict]], comparison: str = "spider",
                 partial_credit: bool = False, workers: int = 1, timeout_s: float = 30.0):
        super().__init__(examples)
        self.comparison, self.partial_credit = comparison, partial_credit
        self.pool = SqlPool(workers, comparison=comparison, limits=Limits(timeout_s=timeout_s))
        self._scorer = CachedScorer(self._judge_batch)
        self.skipped: list[str] = []

    @classmethod
    def from_dataset(cls, data_dir: str | Path, fmt: str, split_map: dict[str, str] | None = None,
                     sample_rows: int = 0, **kwargs) -> "TextToSQLTask":
        split_map = split_map or DEFAULT_SPLITS
        examples, skipped = {}, []
        for split, source in split_map.items():
            try:
                loaded = load_examples(data_dir, fmt, source)
            except FileNotFoundError:
                examples[split] = []
                continue
            kept = []
            for e in loaded:
                if e.missing_reason:
                    skipped.append(f"{source}[{e.index}] {e.db_id}: {e.missing_reason}")
                    continue
                knowledge = e.evidence if fmt == "bird" else None
                kept.append({"id": str(e.index), "input": e.question, "gold_sql": e.gold_sql,
                             "db_path": str(e.db_path),
                             "prompt_kwargs": {"schema": _schema(str(e.db_path), sample_rows),
                                               "knowledge": knowledge}})
            examples[split] = kept
        if skipped:
            log.warning("%s: skipped %d examples whose database is missing (e.g. %s)", data_dir,
                        len(skipped), skipped[0])
        task = cls(examples, comparison=fmt, partial_credit=fmt == "bird", **kwargs)
        task.skipped = skipped
        return task

    def _judge_batch(self, keys: list[tuple]) -> list[dict]:
        exs = [self._index[split][ex_id] for _, split, ex_id in keys]
        outcomes = self.pool.evaluate([SqlItem(ex["db_path"], sql, ex["gold_sql"])
                                       for (sql, _, _), ex in zip(keys, exs)])
        out = []
        for (sql, _, _), ex, o in zip(keys, exs, outcomes):
            m = {"status": o.status.value, "correct": o.correct, "gold_problem": o.gold_problem}
            if o.message:
                m["message"] = o.message
            if self.partial_credit and o.correct:
                m["row_recall"] = 1.0
            elif self.partial_credit and o.status is Status.MISMATCH:
                m["row_recall"] = row_recall(ex["db_path"], sql, ex["gold_sql"])
            out.append(m)
        return out

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        if not parsed.ok or metric is None:
            return ir_reward(False, 0.0)
        answer = float(metric["correct"]) + metric.get("row_recall", 0.0)    # row_recall: BIRD only
        return ir_reward(True, answer)

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        exs = self._check_aligned(queries, split)
        todo = [(q, split, ex["id"]) for q, ex in zip(queries, exs) if q]
        results = dict(zip(todo, self._scorer(todo)))
        per = [results[(q, split, ex["id"])] if q else {} for q, ex in zip(queries, exs)]
        return {"exec_acc": sum(m.get("correct", False) for m in per) / len(exs),
                "gold_problems": float(sum(m.get("gold_problem", False) for m in per)),
                "unanswered": float(sum(not q for q in queries)), "n": float(len(exs)),
                "skipped_missing_db": float(len(self.skipped))}

    def close(self) -> None:
        self.pool.close()

"""Text-to-SQL (Spider, BIRD): question + schema -> SQL, rewarded by executing it read-only.

    task = TextToSQLTask.from_dataset(packaged_dataset("spider"), "spider")
    rewards, details = task.reward(prompts, completions)      # completions answer {"sql": "..."}
    task.evaluate(sqls, "test")                               # {"exec_acc": ..., "gold_problems": ...}

Data: Spider / BIRD folders through sqlexec.datasets (our "train" = the dataset's train split,
"test" = its dev split, as the paper evaluates on dev; `split_map` changes that). Examples whose
database file is missing are skipped and listed in `task.skipped` (Spider's shared copy lacks
wta_1: 62 dev examples). The prompt shows the database's CREATE statements (sqlexec.schema) and,
for BIRD, the external-knowledge evidence; `schema="schema_sql"` shows what the reference's
spider.py shows instead: the database folder's schema.sql without its INSERT lines.

Evaluation (`evaluate`, exec_acc) uses the benchmark's own comparison (sqlexec.compare): Spider's
test-suite `result_eq`, BIRD's set of rows. The training reward (pat-jj/DeepRetrieval
code/verl/utils/reward_score/spider.py and bird.py, `compute_score`): format = think/answer
structure AND a JSON answer with "sql"; format 0.1, else -2. Answer, by `reward`:
  "reference"   (default) as the reference: 1 when set(predicted rows) == set(gold rows), for
                Spider as for BIRD; otherwise 0.3 on BIRD when the prediction ran (bird.py), 0 on
                Spider; 0 for an SQL error or timeout.
  "match"       1 when the evaluation's comparison says correct, else 0.
  "row_recall"  "match" + the fraction of the distinct gold rows the prediction returns (an
                earlier revision of bird.py): an exact match earns 2.1, half the gold rows 0.6.
  "partial"     "match", plus bird.py's 0.3 for SQL that runs but returns other rows, on any
                dataset: a denser signal for a model that rarely writes a correct query yet.
Total = 0.1 + answer when answer > 0, else 0 (format right) or -2, so a correct query earns 1.1.
Deliberate differences from the reference: a gold query that fails or times out is a data
problem (reward 0, `gold_problem` in the details, never correct), and a prediction that times out
is an error (0): the reference turns a 30 s timeout into an empty result and compares it.
Execution runs in `workers` sqlexec.pool worker processes, cached per (SQL, example).

Cross-database split (`split_by_database`): the examples of one split are divided by database,
databases sorted by name and every second one (the 2nd, 4th, ...) going to "test", the rest to
"train", so no evaluation database is ever trained on. Each example's `group` is its database, so
a validation split held out of train (Task.hold_out_validation) takes whole databases too.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from deepretrieval.sqlexec.datasets import MissingSplit, load_examples
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
REWARDS = ("reference", "match", "row_recall", "partial")
SCHEMAS = ("sqlite", "schema_sql")
REFERENCE_MISMATCH = {"spider": 0.0, "bird": 0.3}   # answer for SQL that ran but returned other rows


@lru_cache(maxsize=256)
def _schema(db_path: str, sample_rows: int) -> str:
    return render_schema(db_path, sample_rows=sample_rows)


def spider_schema_sql(db_path: str | Path) -> str | None:
    """spider.py's schema text: the database folder's schema.sql (else <db_id>.sql) minus every line
    that mentions "insert", stripped; None when the folder has neither file."""
    folder = Path(db_path).parent
    for path in (folder / "schema.sql", folder / f"{folder.name}.sql"):
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            return "".join(line for line in lines if "insert" not in line.lower()).strip()
    return None


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
    headline = "exec_acc"

    def __init__(self, examples: dict[str, list[dict]], comparison: str = "spider", reward: str = "reference",
                 workers: int = 1, timeout_s: float = 30.0):
        super().__init__(examples)
        if reward not in REWARDS:
            raise ValueError(f"unknown text-to-SQL reward {reward!r}; choose from {REWARDS}")
        self.comparison, self.reward_kind = comparison, reward
        limits = Limits(timeout_s=timeout_s)
        self.pool = SqlPool(workers, comparison=comparison, limits=limits)
        self._eval_scorer = CachedScorer(lambda keys: self._judge_batch(self.pool, keys))
        # The reference rewards set equality of the rows for both benchmarks; for Spider that is
        # not the evaluation's comparison, so the reward has its own pool (workers start lazily).
        if reward == "reference" and comparison != "bird":
            self._reward_pool = SqlPool(workers, comparison="bird", limits=limits)
            self._scorer = CachedScorer(lambda keys: self._judge_batch(self._reward_pool, keys))
        else:
            self._reward_pool = self.pool
            self._scorer = self._eval_scorer
        self.skipped: list[str] = []

    @classmethod
    def from_dataset(cls, data_dir: str | Path, fmt: str, split_map: dict[str, str] | None = None,
                     sample_rows: int = 0, schema: str = "sqlite", **kwargs) -> "TextToSQLTask":
        if schema not in SCHEMAS or (schema == "schema_sql" and fmt != "spider"):
            raise ValueError(f"schema {schema!r}: use 'sqlite', or 'schema_sql' with Spider")
        split_map = split_map or DEFAULT_SPLITS
        examples, skipped, no_schema_sql, missing = {}, [], set(), {}
        for split, source in split_map.items():
            try:
                loaded = load_examples(data_dir, fmt, source)
            except MissingSplit as exc:     # only the split's file: a missing tables.json is an error
                examples[split], missing[split] = [], str(exc)
                continue
            kept = []
            for e in loaded:
                if e.missing_reason:
                    skipped.append(f"{source}[{e.index}] {e.db_id}: {e.missing_reason}")
                    continue
                text = spider_schema_sql(e.db_path) if schema == "schema_sql" else None
                if text is None:
                    if schema == "schema_sql":
                        no_schema_sql.add(e.db_id)
                    text = _schema(str(e.db_path), sample_rows)
                knowledge = e.evidence if fmt == "bird" else None
                kept.append({"id": str(e.index), "input": e.question, "gold_sql": e.gold_sql, "group": e.db_id,
                             "db_path": str(e.db_path), "prompt_kwargs": {"schema": text, "knowledge": knowledge}})
            examples[split] = kept
        if skipped:
            log.warning("%s: skipped %d examples whose database is missing (e.g. %s)", data_dir,
                        len(skipped), skipped[0])
        if no_schema_sql:       # the reference would show an empty schema; we show the CREATE statements
            log.warning("%s: %d databases have no schema.sql; their prompts show the CREATE statements (e.g. %s)",
                        data_dir, len(no_schema_sql), sorted(no_schema_sql)[0])
        task = cls(examples, comparison=fmt, **kwargs)
        task.skipped, task.missing_splits = skipped, missing
        return task

    def split_by_database(self, source: str = "test") -> dict[str, list[str]]:
        """Divide the examples of `source` into "train" and "test" by database (see the module
        docstring); returns the databases of each side."""
        examples = self.split_examples(source)
        databases = sorted({ex["group"] for ex in examples})
        if len(databases) < 2:
            raise ValueError(f"split {source!r} has {len(databases)} database(s); a cross-database split needs 2")
        sides = {"train": databases[0::2], "test": databases[1::2]}
        self.examples = {**self.examples, **{side: [ex for ex in examples if ex["group"] in set(dbs)]
                                            for side, dbs in sides.items()}}
        self.__dict__.pop("_by_id", None)
        return sides

    def _judge_batch(self, pool: SqlPool, keys: list[tuple]) -> list[dict]:
        exs = [self._index[split][ex_id] for _, split, ex_id in keys]
        outcomes = pool.evaluate([SqlItem(ex["db_path"], sql, ex["gold_sql"]) for (sql, _, _), ex in zip(keys, exs)])
        out = []
        for (sql, _, _), ex, o in zip(keys, exs, outcomes):
            m = {"status": o.status.value, "correct": o.correct, "gold_problem": o.gold_problem}
            if o.message:
                m["message"] = o.message
            if self.reward_kind == "row_recall" and o.correct:
                m["row_recall"] = 1.0
            elif self.reward_kind == "row_recall" and o.status is Status.MISMATCH:
                m["row_recall"] = row_recall(ex["db_path"], sql, ex["gold_sql"])
            out.append(m)
        return out

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        if not parsed.ok or metric is None:
            return ir_reward(False, 0.0)
        answer = float(metric["correct"])
        if self.reward_kind == "reference" and metric["status"] == Status.MISMATCH.value:
            answer = REFERENCE_MISMATCH[self.comparison]
        elif self.reward_kind == "partial" and metric["status"] == Status.MISMATCH.value:
            answer = REFERENCE_MISMATCH["bird"]
        elif self.reward_kind == "row_recall":
            answer += metric.get("row_recall", 0.0)
        return ir_reward(True, answer)

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        exs = self._check_aligned(queries, split)
        todo = [(q, split, ex["id"]) for q, ex in zip(queries, exs) if q]
        results = dict(zip(todo, self._eval_scorer(todo)))
        per = [results[(q, split, ex["id"])] if q else {} for q, ex in zip(queries, exs)]
        correct = [float(m.get("correct", False)) for m in per]
        return {"exec_acc": sum(correct) / len(exs), "per_example": correct,
                "gold_problems": float(sum(m.get("gold_problem", False) for m in per)),
                "unanswered": float(sum(not q for q in queries)), "n": float(len(exs)),
                "skipped_missing_db": float(len(self.skipped))}

    def close(self) -> None:
        self.pool.close()
        self._reward_pool.close()

"""Recall@K of search queries for the paper's literature and trial search sets, on any backend.

    from deepretrieval.retrieval.recall_eval import load_search_examples, evaluate_recall
    examples = load_search_examples("data/pubmed/test.jsonl")
    report = evaluate_recall(examples, queries, PubMedClient(cache=...), k=3000, workers=4)
    report.mean, report.per_query, report.errors

Each line of the jsonl is one systematic review, as the paper's data has it:
    {"pico": {"P": "...", "I": "...", "C": "...", "O": "..."},
     "publication_pmids": ["123", ...]      (literature search)  or  "trial_nctids": ["NCT..."],
     "pub_date": "2019-05-04"}              (optional: the review's date; searches are limited to it)
plus any other keys (an "id" is kept when present; otherwise the line number is the id).

`queries[i]` is searched for `examples[i]` with `max_date=pub_date` (unless `use_date=False`), and
Recall@K = |relevant ids in the top K| / |relevant ids| (`deepretrieval.retrieval.metrics.recall_at_k`). A query
the backend rejects or an engine failure (`SearchError`) scores 0 and its message is kept in
`errors`, so one bad rewrite never stops an evaluation; any other exception propagates.
Backends are searched from `workers` threads (the web clients are thread-safe and share their rate
limiter, so more workers only help while the limiter has room).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deepretrieval.retrieval.metrics import recall_at_k
from deepretrieval.retrieval.search_backend import SearchBackend, SearchError

ID_FIELDS = ("publication_pmids", "trial_nctids")


@dataclass(frozen=True)
class SearchExample:
    id: str
    pico: dict
    relevant: tuple[str, ...]
    pub_date: str | None = None


@dataclass(frozen=True)
class RecallReport:
    k: int
    per_query: list[float]
    errors: list[str | None]     # the SearchError message of a failed query, else None

    @property
    def mean(self) -> float:
        return sum(self.per_query) / len(self.per_query) if self.per_query else 0.0

    @property
    def failed(self) -> int:
        return sum(e is not None for e in self.errors)


def _ids(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    if not isinstance(value, list):
        raise ValueError(f"{where}: ids must be a list or a comma-separated string, got {value!r}")
    ids = tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
    if not ids:
        raise ValueError(f"{where}: no relevant ids")
    return ids


def load_search_examples(path: str | os.PathLike) -> list[SearchExample]:
    """The reviews of a literature/trial-search jsonl; errors name the file and line."""
    examples = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{where}: not JSON ({exc})") from None
            field = next((name for name in ID_FIELDS if name in row), None)
            if field is None:
                raise ValueError(f"{where}: needs one of {ID_FIELDS}")
            pico = row.get("pico") or {}
            if not isinstance(pico, dict):
                raise ValueError(f"{where}: 'pico' must be an object with P, I, C, O")
            date = row.get("pub_date")
            examples.append(SearchExample(str(row.get("id", n)), pico, _ids(row[field], where),
                                          str(date) if date not in (None, "") else None))
    return examples


def evaluate_recall(examples: list[SearchExample], queries: list[str], backend: SearchBackend,
                    k: int = 3000, use_date: bool = True, workers: int = 1,
                    progress: bool = True) -> RecallReport:
    if len(queries) != len(examples):
        raise ValueError(f"{len(queries)} queries for {len(examples)} examples")

    def one(i: int) -> tuple[float, str | None]:
        ex = examples[i]
        try:
            ranked = backend.search(queries[i], max_results=k,
                                    max_date=ex.pub_date if use_date else None)
        except SearchError as exc:
            return 0.0, str(exc)
        return recall_at_k(ranked, {d: 1 for d in ex.relevant}, k), None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, range(len(examples))), total=len(examples),
                            desc=f"recall@{k}", disable=not progress))
    return RecallReport(k, [r for r, _ in results], [e for _, e in results])

"""Literature and trial search: PICO -> Boolean query -> PubMed / ClinicalTrials.gov / offline MEDLINE.

    task = LiteratureSearchTask.from_files("data/pubmed", backend=PubMedClient(), target_field="publication_pmids")
    rewards, details = task.reward(prompts, completions)
    task.evaluate(queries, "test")     # {"recall@3000": ..., "engine_errors": ...}

Data (the paper's jsonl, code/data/raw_data/{pubmed,ctgov}/*.jsonl): one systematic review per
line, {"pico": {"P","I","C","O"}, "publication_pmids": [...] | "trial_nctids": [...], "pub_date"}.
The paper's parquet files work too ("input" = the PICO text, "label" = the ids, "pub_date").
The engine is any `deepretrieval.retrieval.search_backend.SearchBackend`: `search(query, max_results, max_date)`
returns ids best first; each search is limited to what was published up to the review's date
(`date_limit=True`). The reference limits PubMed searches so (pubmed.py `run_search_pubmed`:
pdat 1970/01/01 to the review's date; we put no lower bound) but not ClinicalTrials.gov searches
(ctgov.py `run_search_ctgov`), so configs/ctgov.toml sets `task.date_limit = false`.

A BEIR folder works as well (`from_beir`, `task.dataset = "beir"`): each judged query is a "review"
whose target ids are its relevant documents, with no date; ours with SciFact's claims and its
PubMed abstracts behind the offline PubMed-syntax backend is a literature search small enough to
train on one GPU in minutes (configs/literature_scifact_smollm2.toml, at Recall@100).

Reward (pat-jj/DeepRetrieval code/verl/utils/reward_score/pubmed.py and ctgov.py, `compute_score`):
format +1 when the think/answer structure holds, else -4 and nothing else; then Recall@3000 of the
returned ids against the review's included ids, in tiers
    recall >= 0.7: 5, >= 0.5: 4, >= 0.4: 3, >= 0.3: 1, >= 0.1: 0.5, >= 0.05: 0.1, else -3.5,
and -4 when the answer cannot be evaluated (bad JSON, missing/empty query, engine error). Total =
format + answer, so the range is [-4, 6]. Unlike the original, an empty query scores -4, not 0
(see tasks/answer_parsing.py). Searches run on a thread pool (the clients rate-limit themselves
and keep an on-disk cache) and results are cached per (query, review).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .answer_parsing import ParsedAnswer
from .classic_ir import beir_examples
from .data_files import DataFormatError, first_field, read_records, split_file
from .prompts import pico_text
from .scoring import CachedScorer, threaded
from .task import SPLITS, Task

FORMAT_OK, FORMAT_BAD = 1.0, -4.0
ANSWER_ERROR = -4.0
RECALL_TIERS = ((0.7, 5.0), (0.5, 4.0), (0.4, 3.0), (0.3, 1.0), (0.1, 0.5), (0.05, 0.1))
RECALL_MISS = -3.5
TARGET_FIELDS = {"pubmed": "publication_pmids", "ctgov": "trial_nctids"}


def or_of_words(text: str) -> str:
    """The rule baseline of a Boolean engine: every word of the input joined by OR (the raw text
    as a query ANDs them all and finds little)."""
    return " OR ".join(re.findall(r"[^\W_]+", text))


def recall_reward(recall: float) -> float:
    """The paper's answer score for a Recall@3000 value."""
    return next((r for threshold, r in RECALL_TIERS if recall >= threshold), RECALL_MISS)


def load_reviews(path: str | Path, target_field: str) -> list[dict]:
    """Examples {"id", "input", "gold", "pub_date"} from one jsonl/json/parquet file."""
    out = []
    for i, row in enumerate(read_records(path)):
        where = f"{path} record {i + 1}"
        text = pico_text(row["pico"]) if isinstance(row.get("pico"), dict) else first_field(row, ("input",), where)
        gold = first_field(row, (target_field, "label", "target"), where)
        if isinstance(gold, str) or not gold:
            raise DataFormatError(f"{where}: {target_field} must be a non-empty list of ids")
        out.append({"id": str(row.get("id", i)), "input": text, "gold": [str(g) for g in gold],
                    "pub_date": row.get("pub_date")})
    return out


class LiteratureSearchTask(Task):
    name = "literature_search"
    template = "literature"

    def __init__(self, examples: dict[str, list[dict]], backend, k: int = 3000, workers: int = 8,
                 date_limit: bool = True):
        super().__init__(examples)
        self.backend = backend
        self.k, self.date_limit = k, date_limit
        self.headline = f"recall@{k}"
        self._scorer = CachedScorer(threaded(self._search_one, workers))

    @classmethod
    def from_files(cls, folder: str | Path, backend, target_field: str = "publication_pmids",
                   **kwargs) -> "LiteratureSearchTask":
        examples = {}
        for split in SPLITS:
            try:
                examples[split] = load_reviews(split_file(folder, split), target_field)
            except FileNotFoundError:
                examples[split] = []
        return cls(examples, backend, **kwargs)

    @classmethod
    def from_beir(cls, folder: str | Path, backend, **kwargs) -> "LiteratureSearchTask":
        """Each judged query of a BEIR folder's qrels/{train,dev,test}.tsv with a relevant document,
        its relevant documents (grade > 0) as the target ids, no date."""
        judged, missing = beir_examples(folder)
        examples = {split: [{"id": ex["id"], "input": ex["input"], "pub_date": None,
                             "gold": [d for d, grade in ex["qrels"].items() if grade > 0]}
                            for ex in exs if any(g > 0 for g in ex["qrels"].values())]
                    for split, exs in judged.items()}
        task = cls(examples, backend, **kwargs)
        task.missing_splits = missing
        return task

    def _search_one(self, key: tuple) -> dict:
        query, split, ex_id = key
        ex = self._index[split][ex_id]
        try:
            ids = self.backend.search(query, max_results=self.k, max_date=ex["pub_date"] if self.date_limit else None)
        except Exception as exc:        # the paper scores an engine failure as -4; keep its text
            return {"error": f"{type(exc).__name__}: {exc}"}
        gold = set(ex["gold"])
        return {"recall": len(gold.intersection(ids[:self.k])) / len(gold), "n_returned": len(ids)}

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        if not parsed.format_ok:
            return FORMAT_BAD
        if metric is None or "error" in metric:
            return FORMAT_OK + ANSWER_ERROR
        return FORMAT_OK + recall_reward(metric["recall"])

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        exs = self._check_aligned(queries, split)
        todo = [(q, split, ex["id"]) for q, ex in zip(queries, exs) if q]
        results = dict(zip(todo, self._scorer(todo)))
        recalls, errors = [], 0
        for q, ex in zip(queries, exs):
            m = results.get((q, split, ex["id"]), {}) if q else {}
            errors += "error" in m
            recalls.append(m.get("recall", 0.0))
        return {self.headline: sum(recalls) / len(recalls), "per_example": recalls, "engine_errors": float(errors),
                "unanswered": float(sum(not q for q in queries)), "n": float(len(exs))}

"""Evidence seeking (NQ, TriviaQA, SQuAD): question -> BM25 query over Wikipedia passages.

    task = EvidenceSeekingTask.from_files("data/nq", retriever, passages, dataset="nq")
    rewards, details = task.reward(prompts, completions)
    task.evaluate(queries, "test")        # {"hits@1": ..., "hits@5": ..., "hits@20": ..., "hits@100": ...}

Data: DPR-style QA files, one question with its answer strings per record — jsonl
{"question", "answers"} (the paper's raw files), DPR json, DPR's tab-separated *.qa.csv, or the
paper's parquet ("input", "label"). `retriever.search(queries, k)` returns [(passage id, score)]
best first (retrieval.bm25.BM25Index does); `passages[id]` is the passage text that is matched
("title\\ntext", as pyserini's wikipedia-dpr-100w "contents" the original matched against).

Reward (pat-jj/DeepRetrieval code/verl/utils/reward_score/nq_serini.py and squad.py,
`calculate_answer_score_scale`): format +1 / -4 (then nothing else); the 1-based rank of the first
passage in the top 3,000 that has an answer (DPR has_answer, tasks/answer_match.py):
    rank <= 5: 5, <= 20: 4, <= 50: 2, <= 100: 1, <= 1000: 0.5, <= 3000: 0.1, none: -3.5,
and -4 when the answer cannot be evaluated. SQuAD uses -2.5 for none and -3 for errors (squad.py);
triviaqa.py is nq_serini.py's scale exactly. Prompts: NQ's template "evidence" (nq_serini.py);
TriviaQA and SQuAD share "evidence_tqa_squad" (triviaqa.py = squad.py), which the registry picks
by dataset.
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepretrieval.retrieval.beir import load_corpus

from .answer_match import first_hit_rank
from .answer_parsing import ParsedAnswer
from .data_files import DataFormatError, first_field, read_records, split_file
from .literature_search import ANSWER_ERROR, FORMAT_BAD, FORMAT_OK
from .scoring import CachedScorer
from .task import SPLITS, Task

RANK_TIERS = ((5, 5.0), (20, 4.0), (50, 2.0), (100, 1.0), (1000, 0.5), (3000, 0.1))
# dataset -> (no answer in the top k, answer cannot be evaluated)
PENALTIES = {"nq": (-3.5, ANSWER_ERROR), "triviaqa": (-3.5, ANSWER_ERROR), "squad": (-2.5, -3.0)}
EVAL_HITS = (1, 5, 20, 100)


def rank_reward(rank: int | None, miss: float = -3.5) -> float:
    """The paper's answer score for the rank of the first answer-bearing passage (None = none)."""
    if rank is None:
        return miss
    return next((r for limit, r in RANK_TIERS if rank <= limit), miss)


def load_questions(path: str | Path) -> list[dict]:
    out = []
    for i, row in enumerate(read_records(path)):
        where = f"{path} record {i + 1}"
        answers = first_field(row, ("answers", "answer", "label", "target"), where)
        answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
        if not answers:
            raise DataFormatError(f"{where}: no answer strings")
        out.append({"id": str(row.get("id", i)), "input": first_field(row, ("question", "input"), where),
                    "answers": answers})
    return out


def load_passages(path: str | Path) -> tuple[list[str], list[str]]:
    """(ids, texts "title\\ntext") from a BEIR corpus.jsonl or DPR's psgs_w100.tsv (id, text, title)."""
    path = Path(path)
    if path.name.endswith((".tsv", ".tsv.gz")):
        opener = gzip.open if path.suffix == ".gz" else open
        ids, texts = [], []
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, parts in enumerate(csv.reader(f, delimiter="\t"), 1):
                if lineno == 1 and parts[:1] == ["id"]:
                    continue
                if len(parts) != 3:
                    raise DataFormatError(f"{path}:{lineno}: expected 'id<TAB>text<TAB>title'")
                ids.append(parts[0])
                texts.append(f"{parts[2]}\n{parts[1]}" if parts[2] else parts[1])
        return ids, texts
    return load_corpus(path)


class EvidenceSeekingTask(Task):
    name = "evidence_seeking"
    headline = f"hits@{EVAL_HITS[1]}"
    template = "evidence"

    def __init__(self, examples: dict[str, list[dict]], retriever, passages: Mapping[str, str],
                 dataset: str = "nq", k: int = 3000):
        super().__init__(examples)
        if dataset not in PENALTIES:
            raise ValueError(f"unknown evidence dataset {dataset!r}; choose from {sorted(PENALTIES)}")
        self.retriever, self.passages, self.k = retriever, passages, k
        self.miss_penalty, self.error_penalty = PENALTIES[dataset]
        self._scorer = CachedScorer(self._rank_batch)

    @classmethod
    def from_files(cls, folder: str | Path, retriever, passages, **kwargs) -> "EvidenceSeekingTask":
        examples = {}
        for split in SPLITS:
            try:
                examples[split] = load_questions(split_file(folder, split))
            except FileNotFoundError:
                examples[split] = []
        return cls(examples, retriever, passages, **kwargs)

    def _rank_batch(self, keys: list[tuple]) -> list[dict]:
        hits = self.retriever.search([q for q, _, _ in keys], k=self.k)
        out = []
        for (_, split, ex_id), ranked in zip(keys, hits):
            answers = self._index[split][ex_id]["answers"]
            rank = first_hit_rank(answers, (self.passages[d] for d, _ in ranked))
            out.append({"rank": rank, "n_returned": len(ranked)})
        return out

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        if not parsed.format_ok:
            return FORMAT_BAD
        if metric is None or "error" in metric:
            return FORMAT_OK + self.error_penalty
        return FORMAT_OK + rank_reward(metric["rank"], self.miss_penalty)

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        exs = self._check_aligned(queries, split)
        todo = [(q, split, ex["id"]) for q, ex in zip(queries, exs) if q]
        ranks = {key: m["rank"] for key, m in zip(todo, self._scorer(todo))}
        per_query = [ranks.get((q, split, ex["id"])) if q else None for q, ex in zip(queries, exs)]
        out = {f"hits@{k}": sum(r is not None and r <= k for r in per_query) / len(exs) for k in EVAL_HITS}
        hit_k = int(self.headline.split("@")[1])
        out.update(unanswered=float(sum(not q for q in queries)), n=float(len(exs)),
                   per_example=[float(r is not None and r <= hit_k) for r in per_query])
        return out

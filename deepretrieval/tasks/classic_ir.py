"""Classic IR on BEIR-style data (MS MARCO subsets, FEVER, HotpotQA, SciFact, NFCorpus), BM25 or dense.

    task = ClassicIRTask.from_beir("../shared/data/scifact", retriever, template="scifact")
    rewards, details = task.reward(prompts, completions)
    task.evaluate(task.raw_queries("test"), "test")      # {"ndcg@10": 0.67..., "recall@100": ...}

Data: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv; "dev" is our "val").
`retriever.search(queries, k)` returns [(doc id, score)] best first — `deepretrieval.retrieval.bm25.BM25Index`
or a dense index over the same corpus.

Reward (pat-jj/DeepRetrieval code/verl/utils/reward_score/scifact.py, nfcorpus.py, fever.py,
hotpotqa.py, msmarco.py, `compute_score`): format = think/answer structure AND a JSON answer with
a "query" (`check_json_format`); format score 0.1, or -2 when it fails. Answer score = NDCG@k of
the retrieved list (k = 1000 in training for these datasets; msmarco.py uses k = 3000 and adds 0.2
when any relevant document is retrieved, `recall_bonus`). Total = 0.1 + answer when the answer
score is positive, else 0 (format right) or -2 (format wrong). Evaluation: NDCG@10, Recall@100.
Deviation: the original built one training example per (query, relevant doc) pair and scored NDCG
against that single doc; we score each query against all its judgments, graded, with the ideal DCG
from sorted grades (retrieval/metrics.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deepretrieval.retrieval.beir import load_qrels, load_queries
from deepretrieval.retrieval.metrics import evaluate as evaluate_run
from deepretrieval.retrieval.metrics import ndcg_at_k, recall_at_k

from .answer_parsing import ParsedAnswer
from .scoring import CachedScorer
from .task import Task

FORMAT_OK, FORMAT_BAD = 0.1, -2.0
BEIR_SPLITS = {"train": "train", "val": "dev", "test": "test"}
EVAL_METRICS = ("ndcg@10", "recall@100")


def ir_reward(parsed_ok: bool, answer_score: float) -> float:
    """The original's combination: 0.1 + answer when the answer scores, else 0 / -2 by format."""
    if not parsed_ok:
        return FORMAT_BAD
    return FORMAT_OK + answer_score if answer_score > 0 else 0.0


class ClassicIRTask(Task):
    name = "classic_ir"

    def __init__(self, examples: dict[str, list[dict]], retriever, template: str = "scifact",
                 reward_k: int = 1000, recall_bonus: float = 0.0):
        super().__init__(examples)
        self.retriever, self.template = retriever, template
        self.reward_k, self.recall_bonus = reward_k, recall_bonus
        self._scorer = CachedScorer(self._score_batch)

    @classmethod
    def from_beir(cls, folder: str | Path, retriever, **kwargs) -> "ClassicIRTask":
        folder = Path(folder)
        texts = load_queries(folder / "queries.jsonl")
        examples = {}
        for split, beir_split in BEIR_SPLITS.items():
            qrels_file = folder / "qrels" / f"{beir_split}.tsv"
            qrels = load_qrels(qrels_file) if qrels_file.is_file() else {}
            examples[split] = [{"id": qid, "input": texts[qid], "qrels": judged}
                               for qid, judged in qrels.items() if qid in texts]
        return cls(examples, retriever, **kwargs)

    def _ranked(self, queries: list[str], k: int) -> list[list[str]]:
        return [[d for d, _ in hits] for hits in self.retriever.search(queries, k=k)]

    def _score_batch(self, keys: list[tuple]) -> list[dict]:
        out = []
        for (_, split, ex_id), ranked in zip(keys, self._ranked([q for q, _, _ in keys], self.reward_k)):
            judged = self._index[split][ex_id]["qrels"]
            out.append({"ndcg": ndcg_at_k(ranked, judged, self.reward_k),
                        "recall": recall_at_k(ranked, judged, self.reward_k)})
        return out

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        if not parsed.ok or metric is None:
            return ir_reward(False, 0.0)
        answer = metric["ndcg"] + (self.recall_bonus if metric["recall"] > 0 else 0.0)
        return ir_reward(True, answer)

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        exs = self._check_aligned(queries, split)
        k = max(int(m.split("@")[1]) for m in EVAL_METRICS)
        asked = [(q, ex["id"]) for q, ex in zip(queries, exs) if q]
        run = dict(zip((qid for _, qid in asked), self._ranked([q for q, _ in asked], k))) if asked else {}
        result = evaluate_run(run, {ex["id"]: ex["qrels"] for ex in exs}, EVAL_METRICS)
        return dict(result.mean, unanswered=float(sum(not q for q in queries)), n=float(len(exs)))

"""Classic IR on BEIR-style data (MS MARCO subsets, FEVER, HotpotQA, SciFact, NFCorpus), BM25 or dense.

    task = ClassicIRTask.from_beir(packaged_dataset("scifact"), retriever, template="scifact")
    rewards, details = task.reward(prompts, completions)
    task.evaluate(task.raw_queries("test"), "test")      # {"ndcg@10": 0.67..., "recall@100": ...}

Data: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv; "dev" is our "val"),
or the paper's MS MARCO subset files (tasks/data_files.py `load_msmarco_subset`).
`retriever.search(queries, k)` returns [(doc id, score)] best first — `deepretrieval.retrieval.bm25.BM25Index`
or a dense index over the same corpus.

Reward (pat-jj/DeepRetrieval code/verl/utils/reward_score/{scifact,nfcorpus,fever,hotpotqa,
msmarco_beir,msmarco}.py and reward_score_dense/, `compute_score`): format = think/answer
structure AND a JSON answer with a "query" (`check_json_format`); format score 0.1, or -2 when it
fails. Answer score = NDCG@reward_k of the retrieved list, with the depth the reference uses per
experiment (configs/*.toml: SciFact 50, HotpotQA 3000, dense NFCorpus 100, MS MARCO subsets 10,
the rest 1000). Total = 0.1 + answer when the answer score is positive, else 0 (format right) or
-2 (format wrong). `recall_bonus` adds a constant when anything relevant is retrieved (an earlier
revision of msmarco.py: +0.2; its current one has it commented out). Evaluation: NDCG@10, Recall@100.

`query_mode="expand"` (ours, not the paper's) sends the engine the user's text followed by the
model's answer instead of the answer alone: query expansion, where the model adds terms (a
repeated term counts again in BM25) but cannot lose what the user wrote.

Where the reference differs, its behaviour is an option (docs/FIDELITY.md):
* `ideal="listed"`: the reference's NDCG divides by the DCG of the judgments in qrels-file order
  (src/Lucene/utils.py `ndcg_at_k`), not sorted by grade, which mis-scales NDCG whenever grades
  differ (it can exceed 1). Our default and our evaluation sort them (retrieval/metrics.py).
* `unit="pair"`: scifact.py builds one example per (query, relevant doc) pair with that single doc
  as a binary target, in training and in its evaluation (src/eval/*/scifact.py); by default we
  score each query against all its judgments, graded.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepretrieval.retrieval.beir import check_qrels, load_qrels, load_queries
from deepretrieval.retrieval.metrics import evaluate as evaluate_run
from deepretrieval.retrieval.metrics import ndcg_at_k, recall_at_k

from .answer_parsing import ParsedAnswer
from .scoring import CachedScorer
from .task import Task

FORMAT_OK, FORMAT_BAD = 0.1, -2.0
BEIR_SPLITS = {"train": "train", "val": "dev", "test": "test"}
EVAL_METRICS = ("ndcg@10", "recall@100")
IDEALS = ("sorted", "listed")       # ideal DCG from grades sorted best first (ours) / in qrels order
UNITS = ("query", "pair")           # one example per query (ours) / per (query, relevant doc)
QUERY_MODES = ("rewrite", "expand")   # the engine gets the answer / the user's text + the answer


def ir_reward(parsed_ok: bool, answer_score: float) -> float:
    """The original's combination: 0.1 + answer when the answer scores, else 0 / -2 by format."""
    if not parsed_ok:
        return FORMAT_BAD
    return FORMAT_OK + answer_score if answer_score > 0 else 0.0


def listed_ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """The reference's NDCG@k: gain = grade, ideal DCG = the DCG of the first k judgments in the
    order the qrels list them (`judged`'s order), unsorted."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(list(judged.values())[:k]))
    return dcg / idcg if idcg > 0 else 0.0


def to_pairs(examples: list[dict]) -> list[dict]:
    """One example per (query, relevant doc), the doc as a binary target (the reference's SciFact)."""
    return [{**ex, "id": f"{ex['id']}:{doc}", "qrels": {doc: 1}}
            for ex in examples for doc, grade in ex["qrels"].items() if grade > 0]


def beir_examples(folder: str | Path, doc_ids: Sequence[str] | None = None
                  ) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """({split: [{"id", "input", "qrels"}]}, {split: why it is missing}) of a BEIR folder, for each
    split that has a qrels file; `doc_ids` (the corpus's, when known) lets
    retrieval.beir.check_qrels warn about judgments of unknown documents, and refuse qrels that
    judge none of the corpus."""
    folder = Path(folder)
    texts = load_queries(folder / "queries.jsonl")
    known_docs = set(doc_ids) if doc_ids is not None else None
    examples, missing = {}, {}
    for split, beir_split in BEIR_SPLITS.items():
        qrels_file = folder / "qrels" / f"{beir_split}.tsv"
        if not qrels_file.is_file():
            examples[split], missing[split] = [], f"{qrels_file} does not exist"
            continue
        qrels = load_qrels(qrels_file)
        check_qrels(qrels, texts, known_docs, str(qrels_file))
        examples[split] = [{"id": qid, "input": texts[qid], "qrels": judged}
                           for qid, judged in qrels.items() if qid in texts]
    return examples, missing


class ClassicIRTask(Task):
    name = "classic_ir"
    headline = EVAL_METRICS[0]

    def __init__(self, examples: dict[str, list[dict]], retriever, template: str = "scifact",
                 reward_k: int = 1000, recall_bonus: float = 0.0, ideal: str = "sorted", unit: str = "query",
                 query_mode: str = "rewrite"):
        if ideal not in IDEALS or unit not in UNITS:
            raise ValueError(f"ideal must be one of {IDEALS} and unit one of {UNITS}, got {ideal!r}, {unit!r}")
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
        self.query_mode = query_mode
        if unit == "pair":
            examples = {split: to_pairs(exs) for split, exs in examples.items()}
        super().__init__(examples)
        self.retriever, self.template = retriever, template
        self.reward_k, self.recall_bonus = reward_k, recall_bonus
        self._ndcg = listed_ndcg_at_k if ideal == "listed" else ndcg_at_k
        self._scorer = CachedScorer(self._score_batch)

    @classmethod
    def from_beir(cls, folder: str | Path, retriever, doc_ids: Sequence[str] | None = None,
                  **kwargs) -> "ClassicIRTask":
        """Examples of each split that has a qrels file (see `beir_examples`)."""
        examples, missing = beir_examples(folder, doc_ids)
        task = cls(examples, retriever, **kwargs)
        task.missing_splits = missing
        return task

    def engine_query(self, answer: str, example: dict) -> str:
        return f"{example['input']}\n{answer}" if self.query_mode == "expand" else answer

    def _ranked(self, queries: list[str], k: int) -> list[list[str]]:
        distinct = list(dict.fromkeys(queries))         # pair examples repeat their query
        hits = dict(zip(distinct, self.retriever.search(distinct, k=k)))
        return [[d for d, _ in hits[q]] for q in queries]

    def _score_batch(self, keys: list[tuple]) -> list[dict]:
        out = []
        for (_, split, ex_id), ranked in zip(keys, self._ranked([q for q, _, _ in keys], self.reward_k)):
            judged = self._index[split][ex_id]["qrels"]
            out.append({"ndcg": self._ndcg(ranked, judged, self.reward_k),
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
        return dict(result.mean, unanswered=float(sum(not q for q in queries)), n=float(len(exs)),
                    per_example=[result.per_query[ex["id"]][self.headline] for ex in exs])

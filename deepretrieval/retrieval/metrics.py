"""IR metrics per query and averaged: NDCG@k, Recall@k, Hits@k, MRR@k (trec_eval's definitions).

    from deepretrieval.retrieval.metrics import ndcg_at_k, evaluate
    ndcg_at_k(["d3", "d1", "d9"], {"d1": 2, "d7": 1}, k=10)           # one query; ranked ids
    res = evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10"])   # run: {qid: ranked ids}
    res.mean["ndcg@10"], res.per_query["q1"]["recall@100"]
    low, high = paired_bootstrap_ci(raw_scores, rl_scores)           # 95 % interval of mean(rl - raw)

`ranked` lists doc ids best first; `judged` maps doc id -> graded relevance (as in a qrels file);
a grade <= 0 is not relevant. Definitions, as trec_eval / pytrec_eval compute them:
- NDCG@k = DCG@k / IDCG@k, DCG@k = sum over ranks i = 1..k of gain_i / log2(i + 1), gain = grade.
  IDCG@k is the DCG of the judgments sorted by grade, best first (the original DeepRetrieval code
  used them unsorted, which mis-scales NDCG whenever grades differ).
- Recall@k = relevant docs in the top k / all relevant docs of the query.
- Hits@k = 1 if any relevant doc is in the top k, else 0.
- MRR@k = 1 / rank of the first relevant doc within the top k, else 0.
A query without any relevant judgment scores 0 on every metric. `evaluate` averages over all
queries of `qrels` (a judged query absent from the run scores 0 — pytrec_eval would skip it and
overstate the mean), and `rank_by_score` turns {doc: score} into ranked ids with trec_eval's
tie order (score descending, then doc id descending), so a run file gives the same numbers here
and in trec_eval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

Ranked = Sequence[str]
Judged = Mapping[str, int]


def ndcg_at_k(ranked: Ranked, judged: Judged, k: int) -> float:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if judged.get(d, 0) > 0)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Ranked, judged: Judged, k: int) -> float:
    n_rel = sum(1 for g in judged.values() if g > 0)
    return sum(1 for d in ranked[:k] if judged.get(d, 0) > 0) / n_rel if n_rel else 0.0


def hits_at_k(ranked: Ranked, judged: Judged, k: int) -> float:
    return float(any(judged.get(d, 0) > 0 for d in ranked[:k]))


def mrr_at_k(ranked: Ranked, judged: Judged, k: int) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if judged.get(d, 0) > 0), 0.0)


METRICS: dict[str, Callable[[Ranked, Judged, int], float]] = {
    "ndcg": ndcg_at_k, "recall": recall_at_k, "hits": hits_at_k, "mrr": mrr_at_k}


def parse_metric(name: str) -> tuple[Callable[[Ranked, Judged, int], float], int]:
    """'ndcg@10' -> (ndcg_at_k, 10); a clear ValueError for anything else."""
    base, _, k = name.lower().partition("@")
    if base not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"unknown metric {name!r}: use NAME@K with NAME in {sorted(METRICS)}, e.g. ndcg@10")
    return METRICS[base], int(k)


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Doc ids best first, ties in trec_eval's order (doc id descending)."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


@dataclass
class EvalResult:
    mean: dict[str, float]                      # metric -> mean over the judged queries
    per_query: dict[str, dict[str, float]]      # query id -> metric -> value


def evaluate(run: Mapping[str, Ranked], qrels: Mapping[str, Judged],
             metrics: Sequence[str] = ("ndcg@10", "recall@100")) -> EvalResult:
    """Score a run ({query id: ranked doc ids}) against qrels, per query and averaged."""
    parsed = {m: parse_metric(m) for m in metrics}
    per_query = {qid: {m: fn(run.get(qid, ()), judged, k) for m, (fn, k) in parsed.items()}
                 for qid, judged in qrels.items()}
    n = max(len(per_query), 1)
    mean = {m: sum(v[m] for v in per_query.values()) / n for m in metrics}
    return EvalResult(mean, per_query)


def paired_bootstrap_ci(baseline: Sequence[float], system: Sequence[float], level: float = 0.95,
                        resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(system - baseline) over paired per-query scores.

    Queries are resampled with replacement `resamples` times (the same queries for both systems,
    which is what makes it paired); the interval is the (1 - level) / 2 and (1 + level) / 2
    quantiles of the resampled mean differences (numpy's "inverted_cdf": an observed value, no
    interpolation). An interval entirely above 0 means the gain is unlikely to be resampling luck.
    """
    if len(baseline) != len(system) or len(system) == 0:
        raise ValueError(f"need two equally long, non-empty lists of per-query scores "
                         f"(got {len(baseline)} and {len(system)})")
    diff = np.asarray(system, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):          # [chunk, n] indices at a time bounds memory
        rows = rng.integers(0, len(diff), size=(min(1000, resamples - start), len(diff)))
        means[start:start + len(rows)] = diff[rows].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)

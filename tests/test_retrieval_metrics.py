"""IR metrics: hand-computed cases and equality with pytrec_eval on a real run file."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval

from deepretrieval.retrieval.analyzer import Analyzer
from deepretrieval.retrieval.beir import load_beir
from deepretrieval.retrieval.bm25 import BM25Index
from deepretrieval.retrieval.metrics import evaluate, hits_at_k, mrr_at_k, ndcg_at_k, parse_metric, rank_by_score, recall_at_k


def test_ndcg_ideal_dcg_uses_sorted_judgments():
    judged = {"a": 1, "b": 3, "c": 2, "z": 0}
    ranked = ["a", "x", "b"]
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)   # sorted 3, 2, 1
    assert ndcg_at_k(ranked, judged, 10) == pytest.approx(dcg / ideal)
    unsorted_ideal = 1 / math.log2(2) + 3 / math.log2(3) + 2 / math.log2(4)   # the original code's bug
    assert ndcg_at_k(ranked, judged, 10) != pytest.approx(dcg / unsorted_ideal)
    assert ndcg_at_k(ranked, judged, 1) == pytest.approx(1 / 3)         # ideal@1 is the grade-3 doc
    assert ndcg_at_k(["b", "c", "a"], judged, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_recall_hits_mrr_by_hand():
    judged = {"a": 1, "b": 2, "c": 1, "n": 0}
    ranked = ["x", "n", "b", "y", "a"]
    assert recall_at_k(ranked, judged, 3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, judged, 5) == pytest.approx(2 / 3)
    assert hits_at_k(ranked, judged, 2) == 0.0 and hits_at_k(ranked, judged, 3) == 1.0
    assert mrr_at_k(ranked, judged, 2) == 0.0 and mrr_at_k(ranked, judged, 10) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {}, 10) == 0.0


def test_evaluate_averages_over_all_judged_queries():
    res = evaluate({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 1}}, ["hits@1", "mrr@5"])
    assert res.per_query == {"q1": {"hits@1": 1.0, "mrr@5": 1.0}, "q2": {"hits@1": 0.0, "mrr@5": 0.0}}
    assert res.mean == {"hits@1": 0.5, "mrr@5": 0.5}
    with pytest.raises(ValueError, match="unknown metric 'map@x'"):
        parse_metric("map@x")


def test_rank_by_score_uses_trec_eval_tie_order():
    assert rank_by_score({"d1": 1.0, "d3": 2.0, "d2": 1.0}) == ["d3", "d2", "d1"]


def test_equal_to_pytrec_eval_on_scifact_bm25_run(scifact_dir):
    ds = load_beir(scifact_dir, "test")
    index = BM25Index.build(ds.doc_ids, ds.doc_texts, Analyzer(), show_progress=False)
    hits = index.search(list(ds.queries.values()), k=100)
    scores = {qid: dict(h) for qid, h in zip(ds.queries, hits)}
    ours = evaluate({q: rank_by_score(s) for q, s in scores.items()}, ds.qrels,
                    ["ndcg@10", "ndcg@100", "recall@10", "recall@100", "mrr@100"])
    ref = pytrec_eval.RelevanceEvaluator(ds.qrels, {"ndcg_cut.10,100", "recall.10,100", "recip_rank"})
    ref_pq = ref.evaluate(scores)
    assert set(ref_pq) == set(ours.per_query)
    pairs = {"ndcg@10": "ndcg_cut_10", "ndcg@100": "ndcg_cut_100", "recall@10": "recall_10",
             "recall@100": "recall_100", "mrr@100": "recip_rank"}   # run has 100 hits: MRR@100 = MRR
    for ours_name, ref_name in pairs.items():
        a = np.array([ours.per_query[q][ours_name] for q in ref_pq])
        b = np.array([ref_pq[q][ref_name] for q in ref_pq])
        np.testing.assert_allclose(a, b, atol=1e-9, err_msg=ours_name)
    print("\nSciFact BM25 run, ours vs pytrec_eval: " + ", ".join(
        f"{o} {ours.mean[o]:.4f}/{np.mean([ref_pq[q][r] for q in ref_pq]):.4f}" for o, r in pairs.items()))


def test_paired_bootstrap_ci_hand_computed():
    """Resampling n paired differences: the mean is (sum of n draws) / n. For the differences
    [0, 0, 3] the resampled mean is K with K ~ Binomial(3, 1/3): P(0) = 8/27, P(1) = 12/27,
    P(2) = 6/27, P(3) = 1/27. The 2.5 % quantile is 0 (P(0) > 0.025); the 97.5 % quantile is 3
    (P(<= 2) = 26/27 = 0.963 < 0.975). For [0, 1]: means 0, 0.5, 1 with P 1/4, 1/2, 1/4 -> (0, 1);
    at the 40 % level the quantiles 0.3 / 0.7 both fall on 0.5."""
    from deepretrieval.retrieval.metrics import paired_bootstrap_ci
    assert paired_bootstrap_ci([0, 0, 0], [0, 0, 3]) == (0.0, 3.0)
    assert paired_bootstrap_ci([1, 1], [1, 2]) == (0.0, 1.0)
    assert paired_bootstrap_ci([1, 1], [1, 2], level=0.4) == (0.5, 0.5)
    assert paired_bootstrap_ci([0.2] * 5, [0.5] * 5) == pytest.approx((0.3, 0.3))
    low, high = paired_bootstrap_ci([0.0] * 300, [0.1] * 150 + [-0.05] * 150)
    assert low < 0.025 < high and low > 0 and high < 0.05       # mean diff 0.025, sd 0.075 / sqrt(300)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_ci([1, 2], [1])

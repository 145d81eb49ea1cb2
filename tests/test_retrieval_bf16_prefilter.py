"""The bf16 first pass of the exact CPU search: its error bound holds (and is not vacuous), the
search through it equals faiss IndexFlatIP, and the queries it cannot vouch for go to fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepretrieval.retrieval import exact_topk
from deepretrieval.retrieval.bf16_prefilter import OUTPUT_ROUNDING, Bf16Prefilter, pays_off, shortlist
from deepretrieval.retrieval.dense_index import ExactIndex
from test_retrieval_dense import _random_unit, assert_equals_faiss_flat_ip, differences_outside_ties


def test_error_bound_covers_every_bf16_score():
    # Scaled rows (norms 0.5..3) and a few large components: the bound must hold for every pair.
    rng = np.random.default_rng(7)
    docs = (_random_unit(3000, 384, 8) * rng.uniform(0.5, 3, (3000, 1))).astype(np.float32)
    docs[:50, :4] *= 40
    queries = _random_unit(64, 384, 9)
    pre = Bf16Prefilter(docs)
    r0, q_rounded = pre.error_bound(queries)                                       # [Q], [Q, D]
    approx = torch.mm(q_rounded, pre.rounded.T).float().numpy().astype(np.float64)  # [Q, N]
    exact = queries.astype(np.float64) @ docs.astype(np.float64).T
    bound = OUTPUT_ROUNDING * np.abs(approx) / (1 - OUTPUT_ROUNDING) + r0[:, None]
    slack = bound - np.abs(exact - approx)
    print(f"\nlargest error {np.abs(exact - approx).max():.2e}, smallest slack {slack.min():.2e}, "
          f"largest bound {bound.max():.2e}")
    assert slack.min() > 0
    assert bound.max() < 0.2        # |q| |d| reaches 3 x 40 = 120 here: a bound, not a shrug


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_prefiltered_search_equals_faiss(k, threads):
    docs, queries = _random_unit(20_000, 384, 10), _random_unit(300, 384, 11)
    assert pays_off(k, len(docs), len(queries) // threads)
    # block 3,000: several blocks, so the bf16 pass's running threshold is exercised too
    index = ExactIndex(docs, list(range(len(docs))), block_size=3000, threads=threads, prefilter=True)
    assert_equals_faiss_flat_ip(index, docs, queries, k, f"bf16 first pass, k={k} threads={threads}")
    assert index._bf16 is not None


def test_unsure_queries_are_searched_again_in_fp32(monkeypatch):
    # Query 0 has 200 documents within 1e-4 of each other at the top: bf16 cannot order them, so
    # its shortlist of 36 cannot be vouched for; the other queries are sure.
    faiss = pytest.importorskip("faiss")
    docs, queries = _random_unit(20_000, 64, 12), _random_unit(50, 64, 13)
    docs[:200] = queries[0] + 1e-4 * _random_unit(200, 64, 14)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    searched_again = []
    search_chunk = exact_topk._search_chunk
    monkeypatch.setattr(exact_topk, "_search_chunk", lambda q, *a, **kw: (
        searched_again.append(q), search_chunk(q, *a, **kw))[1])
    k = 10
    scores, rows = exact_topk.top_k_inner_product(queries, docs, k, prefilter=Bf16Prefilter(docs))
    ref = faiss.IndexFlatIP(64)
    ref.add(docs)
    ref_scores, ref_rows = ref.search(queries, k + 1)
    np.testing.assert_allclose(scores, ref_scores[:, :k], atol=1e-6)
    assert differences_outside_ties(rows, ref_rows, ref_scores) == 0
    assert len(searched_again) == 1 and (searched_again[0] == queries[0]).all(1).any()
    assert len(searched_again[0]) < 5


def test_exact_index_builds_the_bf16_copy_only_where_it_pays():
    docs, queries = _random_unit(5000, 32, 15), _random_unit(128, 32, 16)
    index = ExactIndex(docs, list(range(len(docs))), prefilter=True)
    assert shortlist(100) * 128 > len(docs)
    index.search_embeddings(queries, 100)               # k too large for the corpus
    index.search_embeddings(queries[:8], 5)             # too few query-document pairs
    assert index._bf16 is None
    index.search_embeddings(queries, 5)
    assert index._bf16 is not None
    assert ExactIndex(docs, list(range(len(docs))), prefilter=False).prefilter is False

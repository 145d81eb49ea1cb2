"""Exact top-k BM25 that skips most postings of a query's frequent terms (MaxScore: Turtle and
Flood, "Query evaluation: strategies and optimizations", 1995), for large corpora.

    from deepretrieval.retrieval.bm25_maxscore import maxscore_top_k, term_max_scores
    term_max = term_max_scores(W)                   # [V] once per index (stored in saved indexes)
    hits = maxscore_top_k(W, term_max, Q, k=10)     # == top_k of each row of Q @ W, bit for bit

BM25Index.search_tokens takes this path by itself where it pays (`BM25Index.maxscore`).
A term's score in a document is at most its largest score anywhere (`term_max`, times its count
in the query). For each query:
1. A lower bound theta0 of the k-th best score: the k-th best score of a single term, taken over
   its postings where they are few (and always over the rarest term's): k documents score at
   least that much.
2. The query's terms, by bound ascending: the longest prefix whose bounds add up to less than
   theta0 is non-essential. A document that holds none of the other (essential) terms scores
   below theta0, so it is not in the top k, nor tied with its last.
3. One sparse product of the essential terms only (a block of queries at a time) gives the
   candidates and their partial scores; the k-th best partial score is a better bound theta.
4. The non-essential terms, largest bound first, look their scores up for the surviving
   candidates (a binary search in the term's sorted postings); after each, a candidate whose
   score so far plus the bounds of the terms still to come is below theta is dropped, and theta
   rises to the k-th best score so far.
5. The survivors are scored once more, every term in ascending term id in float32: the order in
   which scipy's product sums, so the scores and ties are exactly the full product's.
Every bound is widened by `SAFETY`, far more than float32 sums of a query's terms can differ.
The frequent terms' long posting lists, which dominate the full product, are read only at the
few candidates, and the product's per-document accumulators stay small.

Measured on `bench.bm25_scale`'s synthetic passages, one thread: top-10 1.75x the full product at
1M and 2.06x at 5M in the benchmark's run (1.9x and 2.9x in development runs); top-1000 0.84x at
1M and 1.17x at 5M; slower below 1M, where the full product is already fast (docs/LOG.md).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .sparse_top_k import Hits, top_k

SAFETY = 1 + 1e-5      # float32 sums of up to ~100 terms stay within 1e-5 of their exact value
SEED_POSTINGS = 4096   # step 1 reads the postings of terms with at most this many (and the rarest)


def term_max_scores(matrix: sp.csr_matrix) -> np.ndarray:
    """The largest score of each term (row) of W [V, N] (float32 [V]; 0 for a term with none)."""
    out = np.zeros(matrix.shape[0], dtype=np.float32)
    rows = np.flatnonzero(np.diff(matrix.indptr))
    if len(rows):
        out[rows] = np.maximum.reduceat(matrix.data, matrix.indptr[rows])
    return out


def _kth_best(scores: np.ndarray, k: int) -> float:
    """The k-th best of `scores`, 0 when there are fewer."""
    return float(np.partition(scores, len(scores) - k)[len(scores) - k]) if len(scores) >= k else 0.0


def _term_scores(matrix: sp.csr_matrix, term: int, rows: np.ndarray) -> np.ndarray:
    """Score [len(rows)] of `term` in each of the sorted `rows` (0 where it does not occur)."""
    lo, hi = matrix.indptr[term], matrix.indptr[term + 1]
    docs = matrix.indices[lo:hi]
    if not len(docs):
        return np.zeros(len(rows), dtype=np.float32)
    at = np.searchsorted(docs, rows)
    at[at == len(docs)] = 0
    return np.where(docs[at] == rows, matrix.data[lo:hi][at], np.float32(0))


def essential_terms(matrix: sp.csr_matrix, term_max: np.ndarray, queries: sp.csr_matrix,
                    k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 for queries Q [B, V]: (essential bool [nnz of Q], bound float64 [nnz of Q], rest
    float64 [B]): which entries of Q are essential, each entry's bound (its count times its term's
    largest score), and the widened sum of the bounds of each query's non-essential terms."""
    bound = queries.data * term_max[queries.indices].astype(np.float64)              # [nnz]
    df = matrix.indptr[queries.indices + 1] - matrix.indptr[queries.indices]         # [nnz]
    essential = np.ones(queries.nnz, dtype=bool)
    rest = np.zeros(queries.shape[0])
    for i in range(queries.shape[0]):
        lo, hi = queries.indptr[i], queries.indptr[i + 1]
        if hi == lo:
            continue
        theta0 = 0.0
        rarest = df[lo:hi].min()
        for j in range(lo, hi):
            if df[j] >= k and (df[j] <= SEED_POSTINGS or df[j] == rarest):
                t = queries.indices[j]
                own = matrix.data[matrix.indptr[t]:matrix.indptr[t + 1]]
                theta0 = max(theta0, _kth_best(own, k) * float(queries.data[j]))
        by_bound = np.argsort(bound[lo:hi], kind="stable")
        sums = np.cumsum(bound[lo:hi][by_bound]) * SAFETY
        n = int(np.searchsorted(sums, theta0 / SAFETY, side="left"))   # prefix summing below theta0
        essential[lo + by_bound[:n]] = False
        rest[i] = sums[n - 1] if n else 0.0
    return essential, bound, rest


def maxscore_top_k(matrix: sp.csr_matrix, term_max: np.ndarray, queries: sp.csr_matrix, k: int,
                   query_blocks) -> list[Hits]:
    """Top k (rows, scores) of each row of Q @ W, as `top_k` of the full product gives them.
    query_blocks(E) splits the rows of a [B, V] matrix into ranges for one product each
    (BM25Index._query_blocks: about a fixed number of postings each)."""
    essential, bound, rest = essential_terms(matrix, term_max, queries, k)
    kept = np.where(essential, queries.data, np.float32(0))
    only_essential = sp.csr_matrix((kept, queries.indices.copy(), queries.indptr.copy()), shape=queries.shape)
    only_essential.eliminate_zeros()
    out: list[Hits] = []
    for b0, b1 in query_blocks(only_essential):
        partial = only_essential[b0:b1] @ matrix                                    # [b, N] sparse
        for i in range(b0, b1):
            lo, hi = partial.indptr[i - b0], partial.indptr[i - b0 + 1]
            rows, low = partial.indices[lo:hi], partial.data[lo:hi].astype(np.float64)
            terms = range(queries.indptr[i], queries.indptr[i + 1])
            theta = _kth_best(low, k) / SAFETY
            left = rest[i]
            keep = low * SAFETY + left >= theta
            rows, low = rows[keep], low[keep]
            for j in sorted((j for j in terms if not essential[j]), key=lambda j: -bound[j]):
                low = low + _term_scores(matrix, queries.indices[j], rows) * float(queries.data[j])
                left = max(0.0, left - bound[j] * SAFETY)
                theta = max(theta, _kth_best(low, k) / SAFETY)
                keep = low * SAFETY + left >= theta
                rows, low = rows[keep], low[keep]
            scores = np.zeros(len(rows), dtype=np.float32)
            for j in terms:                                 # ascending term id, as scipy sums
                scores += _term_scores(matrix, queries.indices[j], rows) * queries.data[j]
            out.append(top_k(rows, scores, k))
    return out

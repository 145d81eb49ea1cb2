"""The top k of sparse scores (rows that scored, and their scores), best first, ties in Lucene's
order (ascending row): shared by BM25's full product (retrieval/bm25.py) and its pruned search
(retrieval/bm25_maxscore.py).

    from deepretrieval.retrieval.sparse_top_k import top_k
    rows, scores = top_k(rows, scores, k=10)
"""
from __future__ import annotations

import numpy as np

Hits = tuple[np.ndarray, np.ndarray]   # (rows int [n], scores float32 [n]), best first


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """The k highest-scoring (rows, scores), best first; equal scores in ascending row order (as
    Lucene breaks ties by doc id), so the result does not depend on the order of the input."""
    if len(scores) > k:               # keep the k best and whatever ties with the k-th of them
        keep = scores >= np.partition(scores, len(scores) - k)[len(scores) - k]
        rows, scores = rows[keep], scores[keep]
    # One uint64 key per hit, the score's bits inverted above the row: for scores >= 0 (BM25's
    # are) and rows < 2**32, ascending keys are exactly (score descending, row ascending).
    key = (~np.asarray(scores, dtype=np.float32).view(np.uint32)).astype(np.uint64) << np.uint64(32)
    key |= rows.astype(np.uint64)                                              # [n]
    if len(key) > k:
        key = np.partition(key, k - 1)[:k]
    key.sort()
    return ((key & np.uint64(0xFFFFFFFF)).astype(rows.dtype),
            (~(key >> np.uint64(32)).astype(np.uint32)).view(np.float32))

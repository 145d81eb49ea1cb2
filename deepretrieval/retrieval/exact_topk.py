"""Exact top-k by inner product on the CPU in fp32 (numpy's BLAS): the search behind ExactIndex,
and the running top k that IVFIndex feeds.

    from deepretrieval.retrieval.exact_topk import top_k_inner_product
    scores, rows = top_k_inner_product(queries, docs, k, threads=2)   # [Q, k] float32, int64; best first

How, as faiss does it: the documents go by in blocks; BLAS gives a block's scores [nb, Q]
(doc-major: faster than query-major in OpenBLAS) and only the scores at or above each query's
threshold are kept, a compare and a flatnonzero, nearly free next to the product. The kept
candidates join each query's running top k (`RunningTopK`) only once they add up to
Q * max(k, 64), so that merge, the costly step, runs a few times rather than once per block.
A corpus of one block with a large k (N <= 8k) is one top-k selection instead.

The threshold starts as a lower bound of each query's k-th best score, read off the first block
without a selection over it: the k-th largest of the maxima of 8k groups of its documents (k of
them, one per group, score at least that). For a large k that bound is loose and the first
block's exact top k would cost more than all the rest, so the threshold is a guess instead: the
64th best score of an evenly strided sample of documents, sized so that about 2k documents of the
corpus beat it (its spread is about 1/8 of that). The rare query that ends with fewer than k
candidates is searched again with a lower bound: the result is exact either way.

Threads: with threads=T the queries are split into T chunks, each searched whole (product and
selection) in its own thread; numpy releases the GIL in its loops. BLAS is held to one thread
meanwhile (threadpoolctl), since BLAS threads of its own would fight ours. With threads=1 BLAS may
use its own threads for the product; the selection stays in one.
"""
from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

GROUPS_PER_K = 8           # the first-block bound: k-th largest of the maxima of 8k groups...
GROUP_DOCS = 32            # ... of up to 32 documents each
SAMPLE_RANK = 64           # a sampled threshold: the sample's 64th best score,
SAMPLE_SLACK = 2           # ... which about 2k documents of the corpus beat
SAMPLE_MAX_SHARE = 1 / 16  # sample only if its product costs at most 1/16 of the corpus's
MIN_CHUNK = 64             # queries per thread, at least
MERGE_MIN = 64             # merge once n_q * max(k, 64) candidates wait


def take_rows(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """a[i, cols[i]] for every row i: one flat take, cheaper than take_along_axis's fancy index."""
    a = np.ascontiguousarray(a)
    return a.ravel().take(cols + (np.arange(len(a)) * a.shape[1])[:, None])


def top_k_unordered(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of s [Q, m] (k <= m) and their columns, in no order: torch's topk,
    several times faster than np.argpartition for a small k and as fast for a large one."""
    vals, cols = torch.from_numpy(s).topk(k, dim=1, sorted=False)                # [Q, k]
    return vals.numpy(), cols.numpy()


def best_first(s: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s [Q, k] and rows [Q, k] sorted by decreasing score along each row."""
    order = np.argsort(-s, axis=1)
    return take_rows(s, order), take_rows(rows, order)


class RunningTopK:
    """The running top k of n_q queries, fed blocks of scores; `result()` gives it best first.

    No score below `threshold` [n_q] is kept: a lower bound of each query's k-th best makes the
    result exact; a higher guess may leave a query short of k, its missing places -inf / row -1.
    """

    def __init__(self, n_q: int, k: int, threshold: np.ndarray | None = None):
        self.n_q, self.k = n_q, k
        self.threshold = (np.full(n_q, -np.inf, dtype=np.float32) if threshold is None
                          else np.array(threshold, dtype=np.float32))               # [n_q]
        self.best_s = np.empty((n_q, 0), dtype=np.float32)                         # [n_q, <= k]
        self.best_r = np.empty((n_q, 0), dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []         # (query, row, score)
        self.n_pending = 0

    def add_block(self, s: np.ndarray, lo: int) -> None:
        """Scores s [nb, n_q] of the documents lo..lo+nb-1 for all the queries."""
        pos = np.flatnonzero(s >= self.threshold)                                   # doc-major
        doc, query = np.divmod(pos, self.n_q)
        self.add(query, doc + lo, s.ravel().take(pos))

    def add(self, query: np.ndarray, row: np.ndarray, vals: np.ndarray) -> None:
        """Candidates: query [n], document row [n], score [n], all at or above their threshold."""
        self.pending.append((query, row, vals))
        self.n_pending += len(query)
        if self.n_pending >= self.n_q * max(self.k, MERGE_MIN):
            self.merge()

    def merge(self) -> None:
        """Fold the pending candidates into the running top k and raise the thresholds."""
        if not self.pending:
            return
        n_q, c = self.n_q, self.best_s.shape[1]
        query, row, vals = (np.concatenate(x) for x in zip(*self.pending))
        self.pending, self.n_pending = [], 0
        # Group by query: a stable sort of uint16 keys is numpy's radix sort, O(n).
        order = np.argsort(query.astype(np.uint16) if n_q <= 1 << 16 else query, kind="stable")
        counts = np.bincount(query, minlength=n_q)                                 # [n_q]
        width = c + int(counts.max())
        # [n_q, width]: each query's current top k, then its candidates, padded with -inf.
        cand_s = np.full((n_q, width), -np.inf, dtype=np.float32)
        cand_r = np.full((n_q, width), -1, dtype=np.int64)
        cand_s[:, :c], cand_r[:, :c] = self.best_s, self.best_r
        dest = np.arange(len(order)) + np.repeat(np.arange(n_q) * width + c - (np.cumsum(counts) - counts), counts)
        cand_s.ravel()[dest], cand_r.ravel()[dest] = vals[order], row[order]
        if width > self.k:
            cand_s, cols = top_k_unordered(cand_s, self.k)
            cand_r = take_rows(cand_r, cols)
        self.best_s, self.best_r = cand_s, cand_r
        if width >= self.k:      # a query still short of k has -inf there: its threshold stays
            np.maximum(self.threshold, cand_s.min(1), out=self.threshold)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [n_q, k], rows int64 [n_q, k]) best first."""
        self.merge()
        s, r = self.best_s, self.best_r
        if s.shape[1] < self.k:
            pad = ((0, 0), (0, self.k - s.shape[1]))
            s, r = np.pad(s, pad, constant_values=-np.inf), np.pad(r, pad, constant_values=-1)
        return best_first(s, r)


def first_block_bound(s: np.ndarray, k: int) -> np.ndarray:
    """A lower bound [m] of each query's k-th best score, from the scores s [nb, m] of nb >= k
    documents: the k-th largest of the maxima of min(nb, 8k) groups of them (k documents, one
    per group, score at least that), groups of up to GROUP_DOCS rows of s."""
    groups = min(len(s), GROUPS_PER_K * k)
    size = min(len(s) // groups, GROUP_DOCS)
    maxima = s[:groups * size].reshape(groups, size, -1).max(1)                     # [groups, m]
    # numpy's partition, not torch's topk: on rows this short (8k values) topk cost 0.9 ms per
    # 1,109 queries against 0.25 ms, 2 % of a 5k-document search
    return np.partition(maxima, groups - k, axis=0)[groups - k]                   # k-th largest


def _sample_size(n: int, k: int) -> int:
    """Documents in the threshold sample, or 0 where the sample would cost too much."""
    size = math.ceil(n * SAMPLE_RANK / (SAMPLE_SLACK * k))
    return size if size <= n * SAMPLE_MAX_SHARE else 0


def _search_chunk(q: np.ndarray, docs: np.ndarray, k: int, block_size: int, sample: bool):
    """top_k_inner_product for one chunk of queries, in the calling thread."""
    n = len(docs)
    if n <= min(block_size, GROUPS_PER_K * k):     # one block, whose bound would be a full selection
        s, cols = top_k_unordered(q @ docs.T, k)                                    # [Qc, k]
        return best_first(s, cols.astype(np.int64))
    size = _sample_size(n, k) if sample else 0
    threshold = None
    if size:
        scores = q @ docs[::n // size][:size].T                                     # [Qc, size]
        threshold = np.partition(scores, size - SAMPLE_RANK, axis=1)[:, size - SAMPLE_RANK]
    top = RunningTopK(len(q), k, threshold)
    out = np.empty(min(block_size, n) * len(q), dtype=np.float32)   # reused: no page faults per block
    for lo in range(0, n, block_size):
        block = docs[lo:lo + block_size]                                            # [nb, D]
        s = np.matmul(block, q.T, out=out[:len(block) * len(q)].reshape(len(block), len(q)))   # [nb, Qc]
        if lo == 0 and threshold is None and len(block) >= k:
            top.threshold = first_block_bound(s, k)
        top.add_block(s, lo)
    return top.result()


def search_chunks(search, queries: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """search(q) -> (scores [Qc, k], rows [Qc, k]) run on `threads` chunks of queries [Q, D] at once
    (one thread each, at least MIN_CHUNK queries a chunk); the chunks' results concatenated."""
    n_chunks = max(1, min(threads, len(queries) // MIN_CHUNK))
    bounds = np.linspace(0, len(queries), n_chunks + 1).astype(int)
    chunks = [np.ascontiguousarray(queries[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    if n_chunks == 1:
        parts = [search(chunks[0])]
    else:
        with _blas_controller().limit(limits=1, user_api="blas"):    # our threads, not BLAS's
            parts = list(_pool(n_chunks).map(search, chunks))
    return np.concatenate([s for s, _ in parts]), np.concatenate([r for _, r in parts])


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """numpy's BLAS libraries, found once (a lookup costs milliseconds, a limit microseconds)."""
    return ThreadpoolController()


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """One lasting pool per thread count: a search reuses warm threads (torch's OpenMP set up)
    rather than starting new ones (measured 1-2 ms a search at 5k documents)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="exact_topk")


def _search_chunk_prefiltered(q: np.ndarray, docs: np.ndarray, k: int, block_size: int, prefilter):
    """_search_chunk through a bf16 first pass (retrieval/bf16_prefilter.py); the queries whose
    shortlist it cannot vouch for are searched again in fp32."""
    scores, rows, sure = prefilter.search(q, k, block_size)
    unsure = np.flatnonzero(~sure)
    if len(unsure):
        scores[unsure], rows[unsure] = _search_chunk(q[unsure], docs, k, block_size, sample=True)
    return scores, rows


def top_k_inner_product(queries: np.ndarray, docs: np.ndarray, k: int, block_size: int = 8192,
                        threads: int = 1, prefilter=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of queries [Q, D] against docs [N, D] (float32, 1 <= k <= N) by inner product:
    (scores float32 [Q, k], rows int64 [Q, k]) best first; `threads` chunks of queries at once.
    `prefilter`: a Bf16Prefilter of docs, used for a chunk of queries where it `handles` it; the
    result is the same."""
    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if prefilter is not None and prefilter.handles(k, len(q)):
            return _search_chunk_prefiltered(q, docs, k, block_size, prefilter)
        return _search_chunk(q, docs, k, block_size, sample=True)

    scores, rows = search_chunks(search, queries, threads)
    short = np.flatnonzero(rows[:, -1] < 0)             # a sampled threshold above the k-th best
    if len(short):
        scores[short], rows[short] = _search_chunk(queries[short], docs, k, block_size, sample=False)
    return scores, rows

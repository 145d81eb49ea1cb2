"""A bf16 first pass for the exact CPU top k: twice the products per cycle, same results as fp32.

    from deepretrieval.retrieval.bf16_prefilter import Bf16Prefilter
    pre = Bf16Prefilter(docs)                              # docs [N, D] float32; keeps a bf16 copy
    scores, rows = top_k_inner_product(queries, docs, k, prefilter=pre)    # exact_topk uses it

On a CPU with bf16 dot-product instructions (AVX512-BF16, AMX) oneDNN's bf16 matmul does twice
the work of an fp32 sgemm per cycle (measured 22 vs 42 ms for 1,109 x 5,183 x 384 on one AMD
EPYC Zen 4 core); the product is nearly all of an exact search's time. So the first pass scores
every document in bf16 and keeps each query's best `shortlist(k)` by that score; the shortlist is
then scored again in fp32 and its best k returned.

Exact, not approximate: a bound on the bf16 score's error says, per query, whether the shortlist
must hold the fp32 top k, and the queries where it cannot be sure are searched again in fp32.
With q', d' the bf16 roundings, dq = q - q', dd = d - d' (Cauchy-Schwarz on each term):
    |q.d - q'.d'| <= |dq| |d'| + |q'| |dd| + |dq| |dd|
plus fp32 accumulation (the bf16 products are exact in fp32; at most D roundings of 2^-24 each,
in oneDNN's sum and in the fp32 rescoring) and the bf16 rounding of the output (2^-7 relative:
truncation as well as rounding to nearest). With R(s) that whole bound for a score s, a
document left out of the shortlist (bf16 score at most s_last) has an fp32 score at most
s_last + R(s_last); k documents in it have at least s_k - R(s_k); if the first is below the second
for a query, no document left out can be in its top k.

Only the shortlist's head is rescored: the documents whose upper bound reaches the k-th's lower
bound, about half of it. The shortlist of 2k + 16 left 14 of 1,109 queries to the fp32 search at
k = 10 over 100k random unit vectors (a bound of ~0.006 around scores of ~0.2), none of SciFact's
with all-MiniLM-L6-v2. The pass saves ~4 ns per query and document, the rescoring gathers rows
from memory: at 5,183 documents the two broke even at k = 24 (a shortlist of 64, 1/81 of the
corpus), so the pass is used where the corpus holds DOCS_PER_SHORTLISTED times the shortlist,
and for at least MIN_PAIRS query-document pairs: below that its fixed costs (the queries' norms,
buffers, a second selection) outweigh the product it saves (5,183 docs: 64 queries 4.7 ms against
4.5 in fp32, 128 queries 7.5 against 7.8; 100k docs: faster from one query on).
"""
from __future__ import annotations

import numpy as np
import torch

from .exact_topk import RunningTopK, best_first, first_block_bound, take_rows, top_k_unordered

DOCS_PER_SHORTLISTED = 128  # below this the fp32 search alone was faster
MIN_PAIRS = 1 << 19         # queries x documents; below this too
RESCORE_QUERIES = 32        # queries per rescoring step: their gathered rows stay in the L2 cache
OUTPUT_ROUNDING = 2.0 ** -7  # bf16's relative error, doubled for truncation


def shortlist(k: int) -> int:
    """Documents per query kept by the bf16 pass: 2k + 16."""
    return 2 * k + 16


def pays_off(k: int, n_docs: int, n_queries: int) -> bool:
    """Whether a search of n_queries for their top k of n_docs is faster through the bf16 pass."""
    return shortlist(k) * DOCS_PER_SHORTLISTED <= n_docs and n_queries * n_docs >= MIN_PAIRS


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (elsewhere oneDNN emulates it, slower than fp32)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def norms_and_errors(x: np.ndarray, block: int = 16384) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(upper bounds of |x'| and |x - x'| [n] float64, x' bf16 [n, D]), x' the bf16 rounding of
    x [n, D]. In fp32 (4x faster than float64 at 100k rows): x - x' is exact there (Sterbenz), and
    a norm's fp32 rounding error is below (D + 2) 2^-24 relative, covered twice by the margin."""
    xt, rounded = torch.from_numpy(x), torch.from_numpy(x).to(torch.bfloat16)
    norm, err = torch.empty(len(x)), torch.empty(len(x))
    for lo in range(0, len(x), block):               # in blocks: no fp32 copy of a large corpus
        r = rounded[lo:lo + block].float()
        norm[lo:lo + block] = torch.linalg.vector_norm(r, dim=1)
        err[lo:lo + block] = torch.linalg.vector_norm(xt[lo:lo + block] - r, dim=1)
    margin = 1 + (x.shape[1] + 2) * 2.0 ** -23
    return norm.double().numpy() * margin, err.double().numpy() * margin, rounded


class Bf16Prefilter:
    """The documents [N, D] in bf16 and what the error bound needs of them."""

    def __init__(self, docs: np.ndarray):
        self.docs = docs                                                          # [N, D] float32
        norm, err, self.rounded = norms_and_errors(docs)                          # [N, D] bf16
        self.max_norm, self.max_err = float(norm.max()), float(err.max())
        d = docs.shape[1]
        self.gamma = d * 2.0 ** -24 / (1 - d * 2.0 ** -24)    # fp32 sum of d products, relative

    def handles(self, k: int, n_queries: int) -> bool:
        return pays_off(k, len(self.docs), n_queries)

    def error_bound(self, q: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(R0 [Q] float64: the bound's part that does not grow with the score, q' [Q, D] bf16)."""
        q_norm, q_err, q_rounded = norms_and_errors(q)
        d_norm, d_err = self.max_norm, self.max_err
        products = q_err * d_norm + q_norm * d_err + q_err * d_err
        accumulation = 2 * self.gamma * (q_norm + q_err) * (d_norm + d_err)   # oneDNN's and ours
        return (products + accumulation) * (1 + 1e-6), q_rounded

    def search(self, q: np.ndarray, k: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores [Q, k], rows [Q, k] best first, sure [Q] bool) for queries q [Q, D] float32;
        where sure is False the query's result may be wrong and must be searched in fp32."""
        n, m = len(self.docs), min(shortlist(k), len(self.docs))
        r0, q_rounded = self.error_bound(q)
        top = RunningTopK(len(q), m)
        product = torch.empty(min(block_size, n), len(q), dtype=torch.bfloat16)    # reused buffers:
        scores = torch.empty(product.shape)                                         # no page faults
        for lo in range(0, n, block_size):
            block = self.rounded[lo:lo + block_size]                                # [nb, D]
            s = scores[:len(block)]
            torch.mm(block, q_rounded.T, out=product[:len(block)])
            s.copy_(product[:len(block)])                                           # [nb, Q] fp32
            s = s.numpy()
            if lo == 0 and len(block) >= m:
                top.threshold = first_block_bound(s, m)
            top.add_block(s, lo)
        approx, rows = top.result()                                                 # [Q, m] best first
        approx = approx.astype(np.float64)
        upper = approx + OUTPUT_ROUNDING * np.abs(approx) / (1 - OUTPUT_ROUNDING) + r0[:, None]
        lower_kth = 2 * approx[:, k - 1] - upper[:, k - 1]                          # [Q]
        sure = (upper[:, -1] < lower_kth) | (m == n)
        # Only the shortlist's head can hold the top k: a prefix, since it is sorted best first.
        exact = self.rescore(q, rows, (upper >= lower_kth[:, None]).sum(1))        # [Q, m]
        s, cols = top_k_unordered(exact, k)
        s, r = best_first(s, take_rows(rows, cols))
        return s, r, sure

    def rescore(self, q: np.ndarray, rows: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """fp32 scores [Q, m] of q [Q, D] against the documents rows[i, :heads[i]] (at least those,
        -inf past them), a few queries at a time so that their gathered rows stay in the cache."""
        n_q, m = rows.shape
        out = np.full((n_q, m), -np.inf, dtype=np.float32)
        gathered = np.empty((RESCORE_QUERIES * m, self.docs.shape[1]), dtype=np.float32)
        for a in range(0, n_q, RESCORE_QUERIES):
            b = min(a + RESCORE_QUERIES, n_q)
            h = int(heads[a:b].max())
            # mode="clip": numpy buffers `out` under the default mode="raise" (2.6x slower here)
            g = np.take(self.docs, rows[a:b, :h].ravel(), axis=0, out=gathered[:(b - a) * h], mode="clip")
            out[a:b, :h] = np.einsum("qmd,qd->qm", g.reshape(b - a, h, -1), q[a:b])
        return out

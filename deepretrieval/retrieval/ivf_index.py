"""Inverted-file (IVF) dense index for large corpora: a k-means coarse quantiser, and exact
inner-product scores within the lists each query probes (faiss IndexIVFFlat's method).

    from deepretrieval.retrieval.ivf_index import IVFIndex
    index = IVFIndex.build(doc_emb, doc_ids, nlist=1024)      # doc_emb [N, D] float32; k-means, seed 0
    scores, rows = index.search_embeddings(query_emb, k=10, nprobe=32)   # [Q, k] each, best first
    index.save("runs/corpus.ivf");  index = IVFIndex.load("runs/corpus.ivf")

Training: Lloyd's k-means on at most 64 * nlist documents (a seeded sample), each document to
its centroid of largest inner product (the metric the search probes with, as faiss does for
inner product), `iters` rounds from nlist seeded documents; a list left empty takes half of the
largest one (its centroid split in two, as faiss splits). Every document then joins the list of
its best centroid; the lists are stored as one contiguous array of vectors in list order with
`offsets` [nlist + 1] and each vector's row in `doc_ids`.

Search: each query's nprobe best centroids name the lists it probes. The (query, list) pairs are
grouped by list, so each list's vectors meet all the queries probing it in one BLAS product (a
row of scores per pair); batches of about 256k such scores are filtered at once against each
query's running threshold and kept in a running top k (exact_topk.RunningTopK, faiss's method):
the result is the exact top k of the documents in the probed lists, with nprobe = nlist the
exact top k of all.
A query whose probed lists hold fewer than k documents gets -inf scores and row -1 in the rest.
`threads` searches up to that many chunks of queries at once (run BLAS single-threaded then),
fewer where each list would meet fewer than 4 of a chunk's queries (Q * nprobe / nlist).
Saved as a `deepretrieval.retrieval.index_store` folder (kind "ivf": format version, SHA-256 of every array).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .exact_topk import RunningTopK, search_chunks, top_k_inner_product
from .index_store import IndexFormatError, StringTable, check_doc_ids, read_index, write_index

TRAIN_POINTS_PER_LIST = 64       # k-means sample: at most this many documents per list
SPLIT_EPS = 1 / 1024             # relative nudge when an empty list takes half of the largest
QUERIES_PER_LIST_PER_THREAD = 4  # search in parallel only where lists meet this many queries a chunk
BATCH_SCORES = 1 << 18           # scores selected at once: 1 MiB, cache-sized


def _assign(x: np.ndarray, centroids: np.ndarray, block: int = 16384) -> np.ndarray:
    """Each row of x [n, D]'s centroid of largest inner product: int64 [n]."""
    return np.concatenate([np.argmax(x[i:i + block] @ centroids.T, axis=1)
                           for i in range(0, len(x), block)]) if len(x) else np.empty(0, np.int64)


def train_centroids(x: np.ndarray, nlist: int, iters: int = 10, seed: int = 0) -> np.ndarray:
    """k-means centroids float32 [nlist, D] of x [n, D] (inner-product assignment), seeded."""
    rng = np.random.default_rng(seed)
    if len(x) < nlist:
        raise ValueError(f"{len(x)} documents cannot train {nlist} lists; use nlist <= {len(x)}")
    if len(x) > TRAIN_POINTS_PER_LIST * nlist:
        x = x[np.sort(rng.choice(len(x), TRAIN_POINTS_PER_LIST * nlist, replace=False))]
    x = np.ascontiguousarray(x, dtype=np.float32)
    centroids = x[rng.choice(len(x), nlist, replace=False)].copy()                 # [nlist, D]
    flip = np.where(np.arange(x.shape[1]) % 2 == 0, SPLIT_EPS, -SPLIT_EPS).astype(np.float32)
    for _ in tqdm(range(iters), desc=f"k-means {nlist} lists", leave=False):
        assign = _assign(x, centroids)
        counts = np.bincount(assign, minlength=nlist)
        sums = torch.zeros(nlist, x.shape[1]).index_add_(0, torch.from_numpy(assign), torch.from_numpy(x))
        full = counts > 0
        centroids[full] = sums.numpy()[full] / counts[full, None]
        for empty in np.flatnonzero(~full):
            big = int(np.argmax(counts))            # split it: two nudged copies share its documents
            centroids[empty] = centroids[big] * (1 + flip)
            centroids[big] *= 1 - flip
            counts[empty] = counts[big] // 2
            counts[big] -= counts[empty]
    return centroids


class IVFIndex:
    def __init__(self, centroids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, vectors: np.ndarray,
                 doc_ids, nprobe: int = 8):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)          # [nlist, D]
        self.offsets = np.asarray(offsets, dtype=np.int64)                          # [nlist + 1]
        self.rows = np.asarray(rows, dtype=np.int64)                                # [N]: row in doc_ids
        self.vectors = vectors                                                      # [N, D] float32, list order
        self.doc_ids = doc_ids
        self.nprobe = nprobe

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    @classmethod
    def build(cls, embeddings, doc_ids, nlist: int, nprobe: int = 8, iters: int = 10, seed: int = 0) -> "IVFIndex":
        emb = np.ascontiguousarray(torch.as_tensor(embeddings).float().numpy())     # [N, D]
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], not of shape {emb.shape}")
        if isinstance(doc_ids, list):
            check_doc_ids(doc_ids, len(emb))
        centroids = train_centroids(emb, nlist, iters, seed)
        assign = _assign(emb, centroids)
        rows = np.argsort(assign, kind="stable")                                   # docs in list order
        offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=nlist))])
        return cls(centroids, offsets, rows, emb[rows], doc_ids, nprobe)

    @torch.inference_mode()
    def search_embeddings(self, queries, k: int, nprobe: int | None = None,
                          threads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores float32 [Q, k], rows int64 [Q, k]) best first, rows into doc_ids; k <= N."""
        q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())          # [Q, D]
        nprobe = min(nprobe or self.nprobe, self.nlist)
        k = min(k, len(self.rows))
        # The loop over lists holds the GIL between its small products: a thread only pays where
        # each list meets enough of its chunk's queries.
        threads = max(1, min(threads, len(q) * nprobe // (self.nlist * QUERIES_PER_LIST_PER_THREAD)))
        s, r = search_chunks(lambda chunk: self._search_chunk(chunk, k, nprobe), q, threads)
        return torch.from_numpy(s), torch.from_numpy(r)

    def _search_chunk(self, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        probes = top_k_inner_product(q, self.centroids, nprobe)[1].ravel()          # [P = Qc * nprobe] lists
        order = np.argsort(probes, kind="stable")                                   # (query, list) pairs by list
        pair_query, pair_list = order // nprobe, probes[order]                      # [P] each
        sizes = np.diff(self.offsets)[pair_list]                                    # [P]: documents each pair scores
        starts = np.concatenate([[0], np.cumsum(sizes)])                            # [P + 1]: its scores' place
        queries = q[pair_query]                                                     # [P, D], by list
        lists, first = np.unique(pair_list, return_index=True)                      # lists probed, first pairs
        last = np.append(first[1:], len(pair_list))
        top = RunningTopK(len(q), k)
        i = 0
        while i < len(lists):                  # batches of lists, about BATCH_SCORES scores each
            base = starts[first[i]]
            end = max(i + 1, int(np.searchsorted(starts[last], base + BATCH_SCORES, side="right")))
            s = np.empty(starts[last[end - 1]] - base, dtype=np.float32)             # the batch's scores, flat
            for lst, a, b in zip(lists[i:end], first[i:end], last[i:end]):
                lo, hi = self.offsets[lst], self.offsets[lst + 1]
                out = s[starts[a] - base:starts[b] - base].reshape(b - a, hi - lo)   # [pairs, list's docs]
                np.matmul(queries[a:b], self.vectors[lo:hi].T, out=out)
            pairs = slice(first[i], last[end - 1])
            pos = np.flatnonzero(s >= np.repeat(top.threshold[pair_query[pairs]], sizes[pairs]))
            pair = np.searchsorted(starts, pos + base, side="right") - 1
            doc = self.offsets[pair_list[pair]] + pos + base - starts[pair]           # place in list order
            top.add(pair_query[pair], self.rows[doc], s.take(pos))
            i = end
        return top.result()

    def save(self, path: str | Path) -> Path:
        ids = self.doc_ids if isinstance(self.doc_ids, list) else self.doc_ids.to_list()
        arrays = {"centroids": self.centroids, "offsets": self.offsets, "rows": self.rows, "vectors": self.vectors}
        arrays.update({f"doc_ids.{n}": a for n, a in StringTable.pack(ids).items()})
        return write_index(path, "ivf", {"nlist": self.nlist, "nprobe": self.nprobe}, arrays)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, verify: bool = True) -> "IVFIndex":
        meta, a = read_index(path, "ivf", mmap=mmap, verify=verify)
        ids = StringTable(a["doc_ids.blob"], a["doc_ids.offsets"])
        offsets, n = a["offsets"], len(a["rows"])
        if (len(offsets) != meta["nlist"] + 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0)
                or len(a["vectors"]) != n or len(ids) != n or len(a["centroids"]) != meta["nlist"]):
            raise IndexFormatError(f"{path}: the IVF arrays do not fit together (lists, rows, vectors, "
                                   "doc ids); rebuild the index")
        return cls(a["centroids"], offsets, a["rows"], a["vectors"], ids, meta["nprobe"])

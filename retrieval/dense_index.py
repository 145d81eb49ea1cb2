"""Exact inner-product top-k over document embeddings in torch, and a dense retriever on top.

    from retrieval.dense_index import ExactIndex, DenseRetriever
    index = ExactIndex(doc_emb, doc_ids)                      # doc_emb [N, D] float32 (CPU)
    index = ExactIndex(doc_emb, doc_ids, device="cuda", dtype=torch.float16)   # GPU, half storage
    scores, rows = index.search_embeddings(query_emb, k=10)   # [Q, k] each, best first
    ret = DenseRetriever.build(encoder, doc_ids, texts, model="all-MiniLM-L6-v2")   # encodes the corpus
    ret.search(["what causes ..."], k=10)                     # [[(doc_id, score), ...]]
    ret.save("runs/scifact.minilm");  ret = DenseRetriever.load("runs/scifact.minilm")

Search is a blocked matmul + top k: the documents are split into blocks of `block_size` rows,
each block gives a block of queries' scores and a running top k merges the blocks, so memory
stays at query_block x block_size scores whatever N is: the same exact work as faiss IndexFlatIP.
fp32 on the CPU runs in numpy (its BLAS threads: set them, e.g. with threadpoolctl; torch's for
topk) and selects as faiss does, keeping only the scores above each query's running k-th best;
elsewhere torch's matmul + topk per block. Embeddings may be stored in fp16/bf16 on a GPU (half
the memory and bandwidth); scores are returned in fp32. Saved retrievers keep the embeddings as an .npy (memory-mapped on load), the
doc ids, and the encoder's name and spec, so `load` can encode queries the same way.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .bert_encoder import DenseEncoder, EncoderSpec, load_encoder
from .index_store import StringTable, check_doc_ids, read_index, write_index


class ExactIndex:
    def __init__(self, embeddings, doc_ids, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 block_size: int | None = None, query_block: int = 4096):
        emb = torch.as_tensor(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], not of shape {tuple(emb.shape)}")
        if isinstance(doc_ids, list):               # a loaded StringTable was checked when saved
            check_doc_ids(doc_ids, emb.shape[0])
        self.embeddings = emb.to(device=device, dtype=dtype)                    # [N, D]
        self.doc_ids = doc_ids
        # Docs per block: on the CPU small enough that the [Q, block] scores stay near the caches
        # (8,192 was fastest of those measured at 100k docs); on a GPU large, for occupancy.
        self.block_size = block_size or (8192 if self.device.type == "cpu" else 262144)
        self.query_block = query_block

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    @torch.inference_mode()
    def search_embeddings(self, queries, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores float32 [Q, k'], rows int64 [Q, k']) best first, k' = min(k, N); on the index's device."""
        q = torch.as_tensor(queries).to(device=self.device, dtype=self.embeddings.dtype)  # [Q, D]
        k = min(k, self.embeddings.shape[0])
        parts = [self._search_block(q[i:i + self.query_block], k) for i in range(0, len(q), self.query_block)]
        return torch.cat([s for s, _ in parts]), torch.cat([r for _, r in parts])

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 on the CPU: numpy's BLAS (OpenBLAS in the numpy wheels) does the product; torch's
        # MKL sgemm measured 1.5x slower on AMD EPYC (our CI hosts), and both are exact fp32.
        if self.device.type == "cpu" and q.dtype == torch.float32:
            s, r = _numpy_top_k(q.numpy(), self.embeddings.numpy(), k, self.block_size)
            return torch.from_numpy(s), torch.from_numpy(r)
        best_s = best_r = None
        for start in range(0, self.embeddings.shape[0], self.block_size):
            block = self.embeddings[start:start + self.block_size]                 # [nb, D]
            s, r = (q @ block.T).float().topk(min(k, block.shape[0]), dim=1)     # [Q, kb]
            r += start
            if best_s is not None:                                                 # merge the running top k
                s, pos = torch.cat([best_s, s], 1).topk(k, dim=1)
                r = torch.cat([best_r, r], 1).gather(1, pos)
            best_s, best_r = s, r
        return best_s, best_r


def _top_k_rows(s: np.ndarray, k: int, rows: np.ndarray | None = None,
                ordered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of s [Q, m] and their rows [Q, m] (default: the column numbers),
    best first if `ordered`: torch's topk, which splits the rows over its threads."""
    top, cols = torch.from_numpy(s).topk(min(k, s.shape[1]), dim=1, sorted=ordered)   # [Q, k]
    cols = cols.numpy()
    return top.numpy(), (cols if rows is None else _take_rows(rows, cols))


def _take_rows(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """a[i, cols[i]] for every row i: one flat take, cheaper than take_along_axis's fancy index."""
    a = np.ascontiguousarray(a)
    return a.ravel().take(cols + (np.arange(len(a)) * a.shape[1])[:, None])


def _numpy_top_k(q: np.ndarray, docs: np.ndarray, k: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of q [Q, D] against docs [N, D] (fp32, k <= N) as faiss does it: a block of
    scores from BLAS, of which only those above each query's current k-th best are kept (a
    compare and a flatnonzero, nearly free next to the product); the kept candidates are merged
    into the running top k only once they add up to Q * k, so the O(Q * k) merge runs a few
    times, not once per block. (scores [Q, k], rows int64 [Q, k]) best first."""
    n_q = len(q)
    # docs @ q.T ([nb, Q]) measured 7% faster than q @ docs.T in OpenBLAS; one reused output
    # buffer spares a page-faulting allocation per block.
    flat = np.empty(n_q * min(block_size, len(docs)), dtype=np.float32)
    best_s = np.empty((n_q, 0), dtype=np.float32)                                 # [Q, <= k]
    best_r = np.empty((n_q, 0), dtype=np.int64)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []                # (query, row, score)
    n_pending = 0
    # The first block only sets the thresholds; for a small k a smaller one does, and its full
    # selection (a top k of every score) is the costly step of the whole search. A corpus of one
    # block is one selection, which torch spreads over its threads.
    start, size = 0, block_size if len(docs) <= block_size else min(block_size, max(8 * k, 1024))
    while k and start < len(docs):
        block, lo = docs[start:start + size], start                                # [nb, D]
        start += len(block)
        if best_s.shape[1] < k:                   # fewer than k seen: keep all, docs 0..start-1
            s = q @ block.T                                                       # [Q, nb], kept: not in flat
            best_s = np.concatenate([best_s, s], 1) if best_s.shape[1] else s
            if start >= len(docs):                                                # one selection does it all
                return _top_k_rows(best_s, k, ordered=True)
            if best_s.shape[1] >= k:
                best_s, best_r = _top_k_rows(best_s, k)
                threshold, size = best_s.min(1), block_size                       # [Q]
            continue
        s = np.matmul(block, q.T, out=flat[:len(block) * n_q].reshape(len(block), n_q))   # [nb, Q]
        flat_pos = np.flatnonzero(s > threshold)                                  # doc-major
        doc, query = np.divmod(flat_pos, n_q)
        pending.append((query, doc + lo, s.ravel()[flat_pos]))
        n_pending += len(flat_pos)
        if n_pending >= n_q * k:
            best_s, best_r = _merge(best_s, best_r, pending)
            threshold, pending, n_pending = best_s.min(1), [], 0
    if pending:
        best_s, best_r = _merge(best_s, best_r, pending)
    return _top_k_rows(best_s, k, best_r, ordered=True)


def _merge(best_s: np.ndarray, best_r: np.ndarray, pending) -> tuple[np.ndarray, np.ndarray]:
    """The running top k [Q, k] merged with candidate (query, row, score) arrays."""
    n_q, k = best_s.shape
    query, row, vals = (np.concatenate(x) for x in zip(*pending))
    # Group by query: a stable sort of uint16 keys is numpy's radix sort, O(n).
    order = np.argsort(query.astype(np.uint16 if n_q <= 1 << 16 else np.int64), kind="stable")
    query, row, vals = query[order], row[order], vals[order]
    counts = np.bincount(query, minlength=n_q)                                    # [Q]
    m = int(counts.max())
    # [Q, k + m]: each query's current top k, then its candidates, padded with -inf.
    cand_s = np.full((n_q, k + m), -np.inf, dtype=np.float32)
    cand_r = np.zeros((n_q, k + m), dtype=np.int64)
    cand_s[:, :k], cand_r[:, :k] = best_s, best_r
    flat = query * (k + m) + k + np.arange(len(query)) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_s.ravel()[flat], cand_r.ravel()[flat] = vals, row
    return _top_k_rows(cand_s, k, cand_r)


class DenseRetriever:
    """An encoder plus an ExactIndex of its document embeddings."""

    def __init__(self, encoder: DenseEncoder, index: ExactIndex, model: str):
        self.encoder, self.index, self.model = encoder, index, model

    @classmethod
    def build(cls, encoder: DenseEncoder, doc_ids: list[str], texts: list[str], model: str,
              batch_size: int = 64) -> "DenseRetriever":
        emb = encoder.encode(texts, kind="doc", batch_size=batch_size)             # [N, D]
        return cls(encoder, ExactIndex(emb, list(doc_ids), device=str(encoder.device)), model)

    def search(self, queries: list[str], k: int = 10) -> list[list[tuple[str, float]]]:
        scores, rows = self.index.search_embeddings(self.encoder.encode(queries, kind="query"), k)
        ids = self.index.doc_ids
        return [[(ids[r], s) for r, s in zip(rr, ss)] for rr, ss in zip(rows.tolist(), scores.tolist())]

    def save(self, path: str | Path) -> Path:
        ids = self.index.doc_ids if isinstance(self.index.doc_ids, list) else self.index.doc_ids.to_list()
        arrays = {"embeddings": self.index.embeddings.float().cpu().numpy()}
        arrays.update({f"doc_ids.{n}": a for n, a in StringTable.pack(ids).items()})
        return write_index(path, "dense", {"model": self.model, "spec": asdict(self.encoder.spec)}, arrays)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
             mmap: bool = True, verify: bool = True) -> "DenseRetriever":
        meta, a = read_index(path, "dense", mmap=mmap, verify=verify)
        spec = EncoderSpec(**meta["spec"])
        encoder = load_encoder(meta["model"], spec=spec, device=device, dtype=dtype)
        index = ExactIndex(torch.from_numpy(a["embeddings"]),
                           StringTable(a["doc_ids.blob"], a["doc_ids.offsets"]), device, dtype)
        return cls(encoder, index, meta["model"])

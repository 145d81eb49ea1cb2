"""Exact inner-product top-k over document embeddings in torch, and a dense retriever on top.

    from deepretrieval.retrieval.dense_index import ExactIndex, DenseRetriever
    index = ExactIndex(doc_emb, doc_ids)                      # doc_emb [N, D] float32 (CPU)
    index = ExactIndex(doc_emb, doc_ids, threads=2)           # CPU: 2 query chunks at once (BLAS 1 thread)
    index = ExactIndex(doc_emb, doc_ids, prefilter=False)     # CPU: no bf16 first pass (no bf16 copy)
    index = ExactIndex(doc_emb, doc_ids, device="cuda", dtype=torch.float16)   # GPU, half storage
    scores, rows = index.search_embeddings(query_emb, k=10)   # [Q, k] each, best first
    ret = DenseRetriever.build(encoder, doc_ids, texts, model="all-MiniLM-L6-v2")   # encodes the corpus
    ret.search(["what causes ..."], k=10)                     # [[(doc_id, score), ...]]
    ret.save("runs/scifact.minilm");  ret = DenseRetriever.load("runs/scifact.minilm")

Search is a blocked matmul + top k: the documents are split into blocks of `block_size` rows,
each block gives a block of queries' scores and a running top k merges the blocks, so memory
stays at query_block x block_size scores whatever N is: the same exact work as faiss IndexFlatIP.
fp32 on the CPU runs in numpy (retrieval/exact_topk.py: BLAS, a faiss-style running threshold,
`threads` chunks of queries in parallel, BLAS then best single-threaded), where the CPU has bf16
dot products and k is small next to N through a bf16 first pass whose shortlist is rescored in
fp32 (retrieval/bf16_prefilter.py: same results, a bf16 copy of the embeddings made at the first
such search); elsewhere torch's matmul + topk per block. Embeddings may be stored in fp16/bf16 on
a GPU (half the memory and bandwidth); scores are returned in fp32. Saved retrievers keep the
embeddings as an .npy (memory-mapped on load), the doc ids, and the encoder's name and spec, so
`load` can encode queries the same way.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .bert_encoder import DenseEncoder, EncoderSpec, load_encoder
from .bf16_prefilter import Bf16Prefilter, native_bf16, pays_off
from .exact_topk import top_k_inner_product
from .index_store import StringTable, check_doc_ids, read_index, write_index


class ExactIndex:
    def __init__(self, embeddings, doc_ids, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 block_size: int | None = None, query_block: int = 4096, threads: int = 1,
                 prefilter: bool | None = None):
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
        self.threads = threads          # CPU fp32: query chunks searched at once (exact_topk)
        # CPU fp32: a bf16 first pass where it pays (None: where the CPU has bf16 dot products)
        self.prefilter = (self.device.type == "cpu" and self.embeddings.dtype == torch.float32
                          and (native_bf16() if prefilter is None else prefilter))
        self._bf16: Bf16Prefilter | None = None

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
            docs = self.embeddings.numpy()
            prefilter = self.prefilter and pays_off(k, len(docs), len(q))
            if prefilter and self._bf16 is None:
                self._bf16 = Bf16Prefilter(docs)
            s, r = top_k_inner_product(q.numpy(), docs, k, self.block_size, self.threads,
                                       prefilter=self._bf16 if prefilter else None)
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

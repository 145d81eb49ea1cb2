"""BM25 with Lucene's formula over a term-major sparse matrix of precomputed term scores.

    from deepretrieval.retrieval.analyzer import Analyzer
    from deepretrieval.retrieval.bm25 import BM25Index
    index = BM25Index.build(doc_ids, texts, Analyzer(), k1=0.9, b=0.4)   # texts: title + "\\n" + text
    index.search(["what causes ..."], k=10)        # [[(doc_id, score), ...]] best first
    index.search_tokens([["caus", "..."]], k=1000)  # [(rows int [n], scores float32 [n])]
    index.search(queries, k=100, candidates=[index.rows_of(ids)])   # rank only these documents
    index.save("runs/scifact.bm25");  index = BM25Index.load("runs/scifact.bm25")   # memory-mapped

Scoring (Lucene >= 8, bm25s method "lucene"): for a query term t with document frequency df in a
corpus of N documents, and a document d of length |d| (its number of analysed tokens) in which t
occurs tf times,
    score(t, d) = idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
    idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5)),
and a query's score is the sum over its tokens (a repeated query token counts again, as in a
Lucene BooleanQuery). Unlike Lucene we keep |d| exact instead of its one-byte norm encoding.

Because score(t, d) does not depend on the query, it is computed once at build time and stored
as a CSR matrix W [V terms, N docs] (float32). A batch of queries becomes a sparse count matrix
Q [B, V]; Q @ W (scipy's sparse product, C++) gives each query's scores over the documents it
touches, in blocks of queries that bound memory. The top k (k up to 3,000 and beyond) comes from
one batched torch.topk over the block when most documents match (small corpora, common terms), or
from a partial sort of each row's non-zeros when few do (large corpora).
Documents that share no term with the query are never returned, as in Lucene; with
`candidates`, every candidate is returned (score 0 when it shares no term) — the ranking step of
a Boolean backend, which decides the matching set itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from .analyzer import Analyzer, AnalyzerConfig
from .index_store import StringTable, check_doc_ids, read_index, write_index

Hits = tuple[np.ndarray, np.ndarray]   # (rows int [n], scores float32 [n]), best first


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """The k highest-scoring (rows, scores), best first (ties in no particular order)."""
    if len(scores) > k:
        part = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
        rows, scores = rows[part], scores[part]
    order = np.argsort(-scores)
    return rows[order], scores[order]


def _term_frequencies(term_ids: np.ndarray, lengths: np.ndarray, n_terms: int) -> sp.csr_matrix:
    """tf [V, n] of n documents given as their term ids in order (term_ids) and counts (lengths).
    scipy's COO -> CSR conversion is a stable counting sort by term (each term's docs stay in
    order) that sums duplicate (term, doc) entries: linear time, no sort."""
    doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)      # [total tokens]
    return sp.csr_matrix((np.ones(len(term_ids), dtype=np.float32), (term_ids, doc_of)),
                         shape=(n_terms, len(lengths)), dtype=np.float32)


def _row(m: sp.csr_matrix, i: int) -> Hits:
    lo, hi = m.indptr[i], m.indptr[i + 1]
    return m.indices[lo:hi], m.data[lo:hi]


def _dense_top_k(scores: sp.csr_matrix, k: int) -> list[Hits]:
    """Top k of every row at once (torch.topk over the densified block); rows where most documents
    match are faster this way than row by row. Zero scores (no shared term) are cut off."""
    vals, rows = torch.from_numpy(scores.toarray()).topk(min(k, scores.shape[1]), dim=1)   # [b, k]
    vals, rows = vals.numpy(), rows.numpy()
    return [(rows[i, :n], vals[i, :n]) for i, n in enumerate((vals > 0).sum(1).tolist())]


def _rank_candidates(rows: np.ndarray, vals: np.ndarray, candidates, k: int) -> Hits:
    """Top k of the candidate rows, scored from one query's sparse scores (rows, vals)."""
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    dense = np.zeros(len(cand), dtype=np.float32)
    pos = np.searchsorted(cand, rows)
    hit = pos < len(cand)
    hit[hit] = cand[pos[hit]] == rows[hit]
    dense[pos[hit]] = vals[hit]
    return top_k(cand, dense, k)


class BM25Index:
    """A built or loaded BM25 index; construct with `build`, `build_from_tokens` or `load`."""

    chunk_elements = 1 << 24     # queries are scored in blocks of at most this many (query, doc) cells

    def __init__(self, doc_ids, terms, matrix: sp.csr_matrix, analyzer: AnalyzerConfig | None,
                 k1: float, b: float, avgdl: float):
        self.doc_ids = doc_ids                  # list[str] or StringTable, row -> id
        self.terms = terms                      # list[str] or StringTable, term id -> term
        self.matrix = matrix                    # [V, N] float32 term scores
        self.analyzer = Analyzer.from_config(analyzer) if analyzer is not None else None
        self.k1, self.b, self.avgdl = k1, b, avgdl
        self._vocab: dict[str, int] | None = None
        self._rows: dict[str, int] | None = None

    @property
    def num_docs(self) -> int:
        return self.matrix.shape[1]

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, doc_ids: list[str], texts: list[str], analyzer: Analyzer | None = None,
              k1: float = 0.9, b: float = 0.4, batch_size: int = 8192,
              show_progress: bool = True) -> "BM25Index":
        """Analyse `texts` (one per doc id) and index them, a batch of documents at a time, so
        memory follows the distinct (term, doc) pairs, not the token count."""
        analyzer = analyzer or Analyzer()
        vocab: dict[str, int] = {}
        blocks, lengths = [], []
        for start in tqdm(range(0, len(texts), batch_size), desc="analyse", unit="batch",
                          disable=not show_progress or len(texts) <= batch_size):
            ids, n = analyzer.term_ids(texts[start:start + batch_size], vocab)
            blocks.append(_term_frequencies(ids, n, len(vocab)))
            lengths.append(n)
        for block in blocks:                       # the vocabulary grew after the early batches
            block.resize((len(vocab), block.shape[1]))
        tf = sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=np.float32)
        return cls._from_tf(doc_ids, tf, np.concatenate(lengths or [np.zeros(0, np.int64)]),
                            list(vocab), analyzer.config, k1, b)

    @classmethod
    def build_from_tokens(cls, doc_ids: list[str], tokens: list[list[str]],
                          analyzer: AnalyzerConfig | None = None, k1: float = 0.9,
                          b: float = 0.4) -> "BM25Index":
        """Index already-analysed documents; `analyzer` is the config of the analyzer that made the
        tokens. Without one the index can only be searched with `search_tokens` (e.g. to compare
        with another tokeniser's output) and cannot be saved."""
        vocab: dict[str, int] = {}
        term_ids = np.fromiter((vocab.setdefault(t, len(vocab)) for doc in tokens for t in doc),
                               dtype=np.int64)                                  # [total tokens]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        return cls._from_tf(doc_ids, _term_frequencies(term_ids, lengths, len(vocab)), lengths,
                            list(vocab), analyzer, k1, b)

    @classmethod
    def _from_tf(cls, doc_ids: list[str], tf: sp.csr_matrix, lengths: np.ndarray, terms: list[str],
                 analyzer: AnalyzerConfig | None, k1: float, b: float) -> "BM25Index":
        """tf [V, N]: term frequencies; lengths [N]: terms per doc."""
        check_doc_ids(doc_ids, len(lengths))
        n_terms, n_docs = len(terms), len(lengths)
        df = np.diff(tf.indptr)                                                   # [V]
        avgdl = float(lengths.mean()) if n_docs else 0.0
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))                          # [V]
        norm = k1 * (1 - b + b * lengths / avgdl) if avgdl > 0 else np.full(n_docs, k1)   # [N]
        term = np.repeat(np.arange(n_terms), df)
        data = (idf[term] * tf.data / (tf.data + norm[tf.indices])).astype(np.float32)
        # One index dtype for indptr and indices, else scipy copies them to a common one on load.
        index_dtype = np.int32 if max(len(data), n_docs) < 2**31 else np.int64
        matrix = sp.csr_matrix((data, tf.indices.astype(index_dtype), tf.indptr.astype(index_dtype)),
                               shape=(n_terms, n_docs))
        return cls(list(doc_ids), terms, matrix, analyzer, k1, b, avgdl)

    # ---- searching ------------------------------------------------------------------------
    @property
    def vocab(self) -> dict[str, int]:
        if self._vocab is None:
            terms = self.terms if isinstance(self.terms, list) else self.terms.to_list()
            self._vocab = {t: i for i, t in enumerate(terms)}
        return self._vocab

    def rows_of(self, doc_ids) -> np.ndarray:
        """Row numbers of the given doc ids (KeyError naming an unknown id)."""
        if self._rows is None:
            ids = self.doc_ids if isinstance(self.doc_ids, list) else self.doc_ids.to_list()
            self._rows = {d: i for i, d in enumerate(ids)}
        try:
            return np.fromiter((self._rows[d] for d in doc_ids), dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"doc id {exc.args[0]!r} is not in this index") from None

    def query_matrix(self, token_lists: list[list[str]]) -> sp.csr_matrix:
        """Sparse counts [B, V] of the query tokens; tokens outside the vocabulary match nothing."""
        vocab = self.vocab
        cols = [[vocab[t] for t in toks if t in vocab] for toks in token_lists]
        indptr = np.zeros(len(cols) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in cols], out=indptr[1:])
        indices = np.fromiter((c for cs in cols for c in cs), dtype=np.int32, count=int(indptr[-1]))
        q = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                          shape=(len(cols), self.matrix.shape[0]))
        q.sum_duplicates()
        return q

    def search_tokens(self, token_lists: list[list[str]], k: int,
                      candidates: list[np.ndarray] | None = None) -> list[Hits]:
        """Top-k (rows, scores) per analysed query; with `candidates` (row arrays, one per query)
        only those rows are ranked, each with its score (0 when it shares no term)."""
        if candidates is not None and len(candidates) != len(token_lists):
            raise ValueError(f"{len(candidates)} candidate sets for {len(token_lists)} queries")
        queries = self.query_matrix(token_lists)                                 # [B, V]
        step = max(1, self.chunk_elements // max(self.num_docs, 1))
        out: list[Hits] = []
        for lo in range(0, queries.shape[0], step):
            scores = queries[lo:lo + step] @ self.matrix                         # [b, N] sparse
            if candidates is not None:
                out += [_rank_candidates(*_row(scores, i), candidates[lo + i], k) for i in range(scores.shape[0])]
            elif scores.nnz * 8 >= scores.shape[0] * scores.shape[1]:
                out += _dense_top_k(scores, k)
            else:
                out += [top_k(*_row(scores, i), k) for i in range(scores.shape[0])]
        return out

    def search(self, queries: list[str], k: int = 10,
               candidates: list[np.ndarray] | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (doc_id, score) per query text, best first."""
        if self.analyzer is None:
            raise ValueError("this index was built from pre-analysed tokens; use search_tokens")
        hits = self.search_tokens(self.analyzer.tokenize_batch(queries), k, candidates)
        ids = self.doc_ids
        return [[(ids[r], float(s)) for r, s in zip(rows.tolist(), scores.tolist())]
                for rows, scores in hits]

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        if self.analyzer is None:
            raise ValueError("an index built from pre-analysed tokens cannot be saved: queries could "
                             "not be analysed like its documents; build it with an Analyzer")
        ids = self.doc_ids if isinstance(self.doc_ids, list) else self.doc_ids.to_list()
        terms = self.terms if isinstance(self.terms, list) else self.terms.to_list()
        arrays = {"indptr": self.matrix.indptr, "indices": self.matrix.indices,
                  "data": self.matrix.data}
        arrays.update({f"doc_ids.{n}": a for n, a in StringTable.pack(ids).items()})
        arrays.update({f"terms.{n}": a for n, a in StringTable.pack(terms).items()})
        meta = {"analyzer": self.analyzer.config.to_dict(), "k1": self.k1, "b": self.b,
                "avgdl": self.avgdl, "num_docs": self.num_docs, "num_terms": self.matrix.shape[0]}
        return write_index(path, "bm25", meta, arrays)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, verify: bool = True) -> "BM25Index":
        meta, a = read_index(path, "bm25", mmap=mmap, verify=verify)
        matrix = sp.csr_matrix((a["data"], a["indices"], a["indptr"]),
                               shape=(meta["num_terms"], meta["num_docs"]), copy=False)
        return cls(StringTable(a["doc_ids.blob"], a["doc_ids.offsets"]),
                   StringTable(a["terms.blob"], a["terms.offsets"]), matrix,
                   AnalyzerConfig(**meta["analyzer"]), meta["k1"], meta["b"], meta["avgdl"])

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
as a CSR matrix W [V terms, N docs] (float32, int32 indices). Building keeps 4 bytes per token
(its term id) while analysing, then fills W's arrays in place (`_postings`): at 1M MS MARCO-like
passages it peaks at half of bm25s's memory, 2.3x faster (bench/bm25_scale.py).
A batch of queries becomes a sparse count matrix Q [B, V]; Q @ W (scipy's sparse product, C++)
reads only the rows of the query terms and gives each query's scores over the documents they
touch, in blocks of queries that bound memory. The top k (k up to 3,000 and beyond) is a partial
sort of each row's non-zeros (sparse_top_k.py); equal scores come in ascending row order. Over a
large corpus and a small k (`BM25Index.maxscore`), the search skips most postings of a query's
frequent terms instead (MaxScore, bm25_maxscore.py), with the same rows and scores bit for bit.
Documents that share no term with the query are never returned, as in Lucene; with `candidates`,
every candidate is returned (score 0 when it shares no term) — the ranking step of a Boolean
backend, which decides the matching set itself.
A loaded index is memory-mapped: opening it reads no posting, and a query reads only its terms'
rows, so a served index's private memory is its vocabulary (a dict built on the first query, 110
MiB at 1M passages) and the product's workspace, not its matrix; the pages read count in RSS as
mapped page cache, which the system can reclaim.
"""
from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from .analyzer import Analyzer, AnalyzerConfig, TermIds
from .bm25_maxscore import maxscore_top_k, term_max_scores
from .index_store import StringTable, check_doc_ids, read_index, write_index
from .sparse_top_k import Hits, top_k

# Building works on this many documents at a time (term-major tf), then turns this many postings
# at a time into scores: bounded temporaries whatever the corpus size.
CHUNK_DOCS = 1 << 15
SCORE_CHUNK = 1 << 20


def _term_frequencies(term_ids: np.ndarray, lengths: np.ndarray, n_terms: int) -> sp.csr_matrix:
    """tf [V, n] of n documents given as their term ids in order (term_ids) and counts (lengths).
    scipy's COO -> CSR conversion is a stable counting sort by term (each term's docs stay in
    order) that sums duplicate (term, doc) entries: linear time, no sort."""
    doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)      # [total tokens]
    return sp.csr_matrix((np.ones(len(term_ids), dtype=np.float32), (term_ids, doc_of)),
                         shape=(n_terms, len(lengths)), dtype=np.float32)


def _postings(term_ids: np.ndarray, lengths: np.ndarray, n_terms: int,
              index_dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Term-major postings of documents given as their term ids in order (term_ids [total tokens])
    and counts (lengths [N]): (indptr int64 [V + 1], docs index_dtype [nnz], tf float32 [nnz]),
    each term's docs ascending. Built a chunk of documents at a time, twice (once to count each
    term's documents, once to place them), so memory holds the token ids and the result but never
    a COO copy of every token, nor per-chunk matrices side by side (which doubled the peak)."""
    token_end = np.concatenate([[0], np.cumsum(lengths)])                      # [N + 1]

    def chunks():                                    # (first doc, tf [V, chunk docs]) in order
        for lo in range(0, len(lengths), CHUNK_DOCS):
            hi = min(lo + CHUNK_DOCS, len(lengths))
            yield lo, _term_frequencies(term_ids[token_end[lo]:token_end[hi]], lengths[lo:hi], n_terms)

    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    for _, block in chunks():
        indptr[1:] += np.diff(block.indptr)                                    # documents per term
    np.cumsum(indptr, out=indptr)
    docs = np.empty(indptr[-1], dtype=index_dtype)
    tf = np.empty(indptr[-1], dtype=np.float32)
    fill = indptr[:-1].copy()                        # [V] next free slot of each term's postings
    for first, block in chunks():
        per_term = np.diff(block.indptr)                                       # [V]
        slot = np.arange(block.nnz) + np.repeat(fill - block.indptr[:-1], per_term)   # [chunk nnz]
        docs[slot] = block.indices + first
        tf[slot] = block.data
        fill += per_term
    return indptr, docs, tf


def _term_ranges(indptr: np.ndarray, postings: int):
    """Consecutive ranges (t0, t1) of terms that cover all postings, each with about `postings`
    of them (more where one term alone has more)."""
    bounds = np.unique(np.searchsorted(indptr, np.arange(0, indptr[-1], postings), side="right") - 1)
    return zip(bounds.tolist(), bounds[1:].tolist() + [len(indptr) - 1])


def _row(m: sp.csr_matrix, i: int) -> Hits:
    lo, hi = m.indptr[i], m.indptr[i + 1]
    return m.indices[lo:hi], m.data[lo:hi]


def _rank_candidates(rows: np.ndarray, vals: np.ndarray, candidates, k: int) -> Hits:
    """Top k of the candidate rows, scored from one query's sparse scores (rows, vals)."""
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    dense = np.zeros(len(cand), dtype=np.float32)
    pos = np.searchsorted(cand, rows)
    hit = pos < len(cand)
    hit[hit] = cand[pos[hit]] == rows[hit]
    dense[pos[hit]] = vals[hit]
    return top_k(cand, dense, k)


class _Vocabulary(dict):
    """term -> id, a new term getting the next id on first sight."""

    def __missing__(self, term: str) -> int:
        value = self[term] = len(self)
        return value


class BM25Index:
    """A built or loaded BM25 index; construct with `build`, `build_from_tokens` or `load`."""

    chunk_postings = 1 << 22     # queries are scored in blocks that read about this many postings
    # Search without candidates prunes postings (bm25_maxscore.py: the same results) when True,
    # never when False; None: where it was measured faster, at least MAXSCORE_MIN_DOCS documents
    # and k at most one per MAXSCORE_DOCS_PER_K of them (1M: k <= 100; 5M: k <= 500).
    maxscore: bool | None = None
    MAXSCORE_MIN_DOCS = 500_000
    MAXSCORE_DOCS_PER_K = 10_000

    def __init__(self, doc_ids, terms, matrix: sp.csr_matrix, analyzer: AnalyzerConfig | None,
                 k1: float, b: float, avgdl: float, term_max: np.ndarray | None = None):
        self.doc_ids = doc_ids                  # list[str] or StringTable, row -> id
        self.terms = terms                      # list[str] or StringTable, term id -> term
        self.matrix = matrix                    # [V, N] float32 term scores
        self.analyzer = Analyzer.from_config(analyzer) if analyzer is not None else None
        self.k1, self.b, self.avgdl = k1, b, avgdl
        self._term_max = term_max               # [V] float32, each term's largest score
        self._vocab: dict[str, int] | None = None
        self._rows: dict[str, int] | None = None

    @property
    def num_docs(self) -> int:
        return self.matrix.shape[1]

    @property
    def term_max(self) -> np.ndarray:
        """Each term's largest score [V] (float32): built with the index, saved with it, computed
        on first use for an index saved before it was (one pass over the scores)."""
        if self._term_max is None:
            self._term_max = term_max_scores(self.matrix)
        return self._term_max

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, doc_ids: list[str], texts: list[str], analyzer: Analyzer | None = None,
              k1: float = 0.9, b: float = 0.4, batch_size: int = 8192,
              show_progress: bool = True) -> "BM25Index":
        """Analyse `texts` (one per doc id) and index them. Analysis keeps only each document's
        term ids (int32, a batch of documents at a time), so memory follows the token count at 4
        bytes a token, then the distinct (term, doc) pairs of the index."""
        analyzer = analyzer or Analyzer()
        to_ids = TermIds(analyzer)
        ids, lengths = [], []
        for start in tqdm(range(0, len(texts), batch_size), desc="analyse", unit="batch",
                          disable=not show_progress or len(texts) <= batch_size):
            batch_ids, batch_lengths = to_ids(texts[start:start + batch_size])
            ids.append(batch_ids)
            lengths.append(batch_lengths)
        terms = list(to_ids.vocab)
        del to_ids                                 # its word memo is not needed any more: free it
        term_ids = np.concatenate(ids or [np.zeros(0, np.int32)])                # [total terms]
        del ids
        return cls._from_term_ids(doc_ids, term_ids, np.concatenate(lengths or [np.zeros(0, np.int64)]),
                                  terms, analyzer.config, k1, b)

    @classmethod
    def build_from_tokens(cls, doc_ids: list[str], tokens: list[list[str]],
                          analyzer: AnalyzerConfig | None = None, k1: float = 0.9,
                          b: float = 0.4) -> "BM25Index":
        """Index already-analysed documents; `analyzer` is the config of the analyzer that made the
        tokens. Without one the index can only be searched with `search_tokens` (e.g. to compare
        with another tokeniser's output) and cannot be saved."""
        vocab = _Vocabulary()
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        term_ids = np.empty(int(lengths.sum()), dtype=np.int32)                  # [total tokens]
        end = 0
        for lo in range(0, len(tokens), 1 << 14):   # lists of ids for a batch of docs, not all
            ids = list(map(vocab.__getitem__, chain.from_iterable(tokens[lo:lo + (1 << 14)])))
            term_ids[end:end + len(ids)] = ids
            end += len(ids)
        return cls._from_term_ids(doc_ids, term_ids, lengths, list(vocab), analyzer, k1, b)

    @classmethod
    def _from_term_ids(cls, doc_ids: list[str], term_ids: np.ndarray, lengths: np.ndarray,
                       terms: list[str], analyzer: AnalyzerConfig | None, k1: float,
                       b: float) -> "BM25Index":
        """term_ids [total tokens]: each document's term ids in order; lengths [N]: terms per doc."""
        check_doc_ids(doc_ids, len(lengths))
        n_terms, n_docs = len(terms), len(lengths)
        if n_docs >= 2**32:
            raise ValueError(f"{n_docs} documents: an index holds fewer than 2**32 (top_k packs rows in 32 bits)")
        # One index dtype for indptr and indices, else scipy copies them to a common one on load.
        index_dtype = np.int32 if max(len(term_ids), n_docs) < 2**31 else np.int64
        indptr, docs, scores = _postings(term_ids, lengths, n_terms, index_dtype)
        df = np.diff(indptr)                                                      # [V]
        avgdl = float(lengths.mean()) if n_docs else 0.0
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))                          # [V]
        norm = k1 * (1 - b + b * lengths / avgdl) if avgdl > 0 else np.full(n_docs, k1)   # [N]
        # tf -> score in place, a range of terms at a time: float64 temporaries of a few MB, not
        # of every posting.
        for t0, t1 in _term_ranges(indptr, SCORE_CHUNK):
            lo, hi = indptr[t0], indptr[t1]
            tf = scores[lo:hi]
            scores[lo:hi] = np.repeat(idf[t0:t1], df[t0:t1]) * tf / (tf + norm[docs[lo:hi]])
        matrix = sp.csr_matrix((scores, docs, indptr.astype(index_dtype)), shape=(n_terms, n_docs))
        return cls(list(doc_ids), terms, matrix, analyzer, k1, b, avgdl, term_max_scores(matrix))

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
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if candidates is not None and len(candidates) != len(token_lists):
            raise ValueError(f"{len(candidates)} candidate sets for {len(token_lists)} queries")
        queries = self.query_matrix(token_lists)                                 # [B, V]
        if candidates is None and self._prunes(k):
            return maxscore_top_k(self.matrix, self.term_max, queries, k, self._query_blocks)
        out: list[Hits] = []
        for lo, hi in self._query_blocks(queries):
            scores = queries[lo:hi] @ self.matrix                                # [b, N] sparse
            if candidates is not None:
                out += [_rank_candidates(*_row(scores, i), candidates[lo + i], k) for i in range(scores.shape[0])]
            else:
                out += [top_k(*_row(scores, i), k) for i in range(scores.shape[0])]
        return out

    def _prunes(self, k: int) -> bool:
        if self.maxscore is not None:
            return self.maxscore
        return self.num_docs >= self.MAXSCORE_MIN_DOCS and k * self.MAXSCORE_DOCS_PER_K <= self.num_docs

    def _query_blocks(self, queries: sp.csr_matrix) -> list[tuple[int, int]]:
        """Consecutive ranges of queries [B, V] whose postings add up to about `chunk_postings`
        (one query at least): the sparse product's memory stays bounded (it has at most that many
        non-zeros), and the O(N) set-up scipy does per product is shared by the queries of a block."""
        indptr = self.matrix.indptr
        reads = np.zeros(queries.nnz + 1, dtype=np.int64)
        np.cumsum(indptr[queries.indices + 1] - indptr[queries.indices], out=reads[1:])
        reads = reads[queries.indptr]                  # [B + 1] postings read before each query
        bounds = [0]
        while bounds[-1] < queries.shape[0]:
            end = int(np.searchsorted(reads, reads[bounds[-1]] + self.chunk_postings, side="right")) - 1
            bounds.append(min(max(end, bounds[-1] + 1), queries.shape[0]))
        return list(zip(bounds[:-1], bounds[1:]))

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
                  "data": self.matrix.data, "term_max": self.term_max}
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
                   AnalyzerConfig(**meta["analyzer"]), meta["k1"], meta["b"], meta["avgdl"], a.get("term_max"))

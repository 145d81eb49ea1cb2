"""BM25's fast paths against straightforward references on a small synthetic corpus with many tied
scores: the index matrix (analysis in one regex pass per batch, postings filled chunk by chunk,
scores computed in place) bit-equal to a dense one from the one-text analyzer; search (sparse
product in blocks, top-k by packed keys) equal to dense scoring sorted by (score desc, row asc),
with and without candidates; top_k itself; a memory-mapped index still mapped after searching."""
from __future__ import annotations

import numpy as np
import pytest

from deepretrieval.retrieval import bm25
from deepretrieval.retrieval.analyzer import Analyzer, TermIds
from deepretrieval.retrieval.bm25 import BM25Index
from deepretrieval.retrieval.bm25_maxscore import essential_terms
from deepretrieval.retrieval.sparse_top_k import top_k

# Stop words, inflections the stemmer merges, capitals, possessives at a text's end, the analysis
# separator's word in capitals ("QQ"), non-ASCII, newlines: what the one-pass analysis must get
# right. Few words and short texts, so that many documents score the same.
WORDS = ["the", "of", "and", "Cells", "cell", "cell's", "binding", "binds", "QQ", "qq", "Qq",
         "protein", "proteins’", "ΣΑΣ", "σας", "x", "5-HT3", "running\nrun", "it's", "DNA."]


def synthetic_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, 9))) for _ in range(n)]


def reference_matrix(texts: list[str], analyzer: Analyzer, k1: float, b: float):
    """(terms, W [V, N] float32) from the one-text analyzer and dense arrays: the formula of
    bm25.py's docstring, evaluated in the same float64 operations before the cast to float32."""
    tokens = [analyzer.tokenize(t) for t in texts]
    terms = list(dict.fromkeys(t for doc in tokens for t in doc))       # ids by first occurrence
    row = {t: i for i, t in enumerate(terms)}
    tf = np.zeros((len(terms), len(texts)))
    for d, doc in enumerate(tokens):
        for t in doc:
            tf[row[t], d] += 1
    lengths = np.array([len(doc) for doc in tokens])
    df = (tf > 0).sum(1)
    idf = np.log1p((len(texts) - df + 0.5) / (df + 0.5))
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    with np.errstate(invalid="ignore"):
        w = np.where(tf > 0, idf[:, None] * tf / (tf + norm[None, :]), 0)
    return terms, w.astype(np.float32)


def reference_search(w: np.ndarray, index: BM25Index, tokens: list[str], k: int, candidates=None):
    """Dense float32 scores summed term by term in ascending term id (the order of scipy's product),
    sorted by score descending then row ascending."""
    counts: dict[int, int] = {}
    for t in tokens:
        if t in index.vocab:
            counts[index.vocab[t]] = counts.get(index.vocab[t], 0) + 1
    scores = np.zeros(w.shape[1], dtype=np.float32)
    for term in sorted(counts):
        scores += np.float32(counts[term]) * w[term]
    if candidates is None:
        rows = np.flatnonzero((w[sorted(counts)] > 0).any(0)) if counts else np.zeros(0, np.int64)
    else:
        rows = np.unique(candidates)
    order = np.lexsort((rows, -scores[rows]))[:k]
    return rows[order], scores[rows][order]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunk sizes small enough that every chunked loop runs many times on the small corpus."""
    monkeypatch.setattr(bm25, "CHUNK_DOCS", 7)
    monkeypatch.setattr(bm25, "SCORE_CHUNK", 5)


@pytest.mark.parametrize("analyzer", [Analyzer(), Analyzer(stemmer="english", token_pattern=r"\w+"),
                                      Analyzer(lowercase=False), Analyzer(token_pattern=r"[^\W\d]+")],
                         ids=["default", "english-w+", "cased", "letters"])
def test_build_equals_dense_reference(small_chunks, analyzer):
    texts = synthetic_texts(300, seed=0)
    terms, w = reference_matrix(texts, analyzer, k1=1.2, b=0.75)
    index = BM25Index.build([f"d{i}" for i in range(len(texts))], texts, analyzer, k1=1.2, b=0.75,
                            batch_size=16, show_progress=False)
    assert index.terms == terms
    assert index.matrix.has_sorted_indices and index.matrix.indices.dtype == np.int32
    assert np.array_equal(index.matrix.toarray(), w)                    # bit for bit
    from_tokens = BM25Index.build_from_tokens(index.doc_ids, [analyzer.tokenize(t) for t in texts],
                                              analyzer.config, k1=1.2, b=0.75)
    assert from_tokens.terms == terms and (from_tokens.matrix != index.matrix).nnz == 0


def test_one_pass_analysis_equals_text_by_text():
    texts = synthetic_texts(200, seed=1) + ["", "QQ", "the's", "end with it's", "cell's"]
    for analyzer in (Analyzer(), Analyzer(lowercase=False), Analyzer(token_pattern=r"\w+", possessive=False)):
        to_ids = TermIds(analyzer)
        ids, lengths = zip(*(to_ids(texts[i:i + 13]) for i in range(0, len(texts), 13)))
        terms = list(to_ids.vocab)
        single = [analyzer.tokenize(t) for t in texts]
        assert np.concatenate(lengths).tolist() == [len(s) for s in single]
        assert [terms[i] for i in np.concatenate(ids).tolist()] == [t for s in single for t in s]


@pytest.mark.parametrize("maxscore", [False, True], ids=["full-product", "maxscore"])
def test_search_equals_dense_reference(small_chunks, maxscore):
    analyzer = Analyzer()
    texts = synthetic_texts(300, seed=2)
    _, w = reference_matrix(texts, analyzer, k1=0.9, b=0.4)
    index = BM25Index.build([f"d{i}" for i in range(len(texts))], texts, analyzer, show_progress=False)
    index.chunk_postings = 40                                     # many blocks of a few queries
    index.maxscore = maxscore                                     # (candidates: the product either way)
    queries = [analyzer.tokenize(q) for q in synthetic_texts(60, seed=3)] + [["cell", "cell"], ["unknown"], []]
    rng = np.random.default_rng(4)
    candidates = [rng.choice(len(texts), size=25, replace=True) for _ in queries]
    ties = 0
    for k in (1, 5, 40, 1000):
        for (rows, scores), toks in zip(index.search_tokens(queries, k), queries):
            ref_rows, ref_scores = reference_search(w, index, toks, k)
            assert rows.tolist() == ref_rows.tolist() and scores.tolist() == ref_scores.tolist()
            ties += int(np.sum(scores[1:] == scores[:-1]))
        for (rows, scores), toks, cand in zip(index.search_tokens(queries, k, candidates), queries, candidates):
            ref_rows, ref_scores = reference_search(w, index, toks, k, cand)
            assert rows.tolist() == ref_rows.tolist() and scores.tolist() == ref_scores.tolist()
    assert ties > 1000                                    # the corpus does exercise the tie order
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search_tokens(queries, 0)


def zipf_index(n_docs: int, vocabulary: int, seed: int) -> BM25Index:
    """Documents of 3-40 words drawn with Zipf frequencies (a few words in most documents, most in
    a few), every 50th document a copy of the one before (tied scores)."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocabulary + 1) ** 1.1
    docs = [[f"w{w}" for w in rng.choice(vocabulary, size=rng.integers(3, 41), p=p / p.sum())]
            for _ in range(n_docs)]
    docs = [docs[i - 1] if i % 50 == 1 else d for i, d in enumerate(docs)]
    return BM25Index.build_from_tokens([f"d{i}" for i in range(n_docs)], docs)


def test_maxscore_equals_full_product_and_skips_frequent_terms():
    """The pruned search (bm25_maxscore.py) gives the full product's rows and scores bit for bit —
    repeated query words, words outside the vocabulary, an empty query, k beyond the matches — and
    does prune: the essential terms hold a third of the postings, and many queries that hold a rare
    word leave their most frequent word non-essential."""
    index = zipf_index(3000, 800, seed=8)
    rng = np.random.default_rng(9)
    queries = [[f"w{w}" for w in rng.integers(0, 800, size=rng.integers(1, 9))] for _ in range(150)]
    queries += [["w0", "w0", "w1"], ["w0", "w799", "w799"], ["nowhere"], [], ["w3", "nowhere"]]
    for k in (1, 3, 10, 100, 5000):
        index.maxscore = False
        want = index.search_tokens(queries, k)
        index.maxscore = True
        for chunk in (1 << 22, 30):                         # one product, and a block per query or two
            index.chunk_postings = chunk
            got = index.search_tokens(queries, k)
            assert all(np.array_equal(g[0], w[0]) and np.array_equal(g[1], w[1]) for g, w in zip(got, want)), k
    q = index.query_matrix(queries[:150])
    essential, _, rest = essential_terms(index.matrix, index.term_max, q, 10)
    df = np.diff(index.matrix.indptr)[q.indices]                  # [nnz] postings of each query term
    assert df[essential].sum() < 0.5 * df.sum()                   # the product reads a third (13k of 39k)
    pruned = with_rare = 0
    for i in range(q.shape[0]):
        lo, hi = q.indptr[i], q.indptr[i + 1]
        if hi - lo >= 2 and df[lo:hi].min() <= 20:
            with_rare += 1
            pruned += not essential[lo + np.argmax(df[lo:hi])]
    assert with_rare > 100 and pruned > 0.4 * with_rare, (pruned, with_rare)       # 70 of 133
    assert np.all(rest >= 0) and np.all((rest > 0) == [not essential[q.indptr[i]:q.indptr[i + 1]].all()
                                                       for i in range(q.shape[0])])


def test_maxscore_default_rule():
    index = zipf_index(100, 50, seed=10)
    assert not index._prunes(10)                                 # a small corpus: the full product
    index.MAXSCORE_MIN_DOCS, index.MAXSCORE_DOCS_PER_K = 100, 10
    assert index._prunes(10) and not index._prunes(11)


def test_top_k_orders_ties_by_row():
    rng = np.random.default_rng(5)
    for n, k in [(0, 3), (5, 10), (50, 50), (1000, 7), (1000, 300)]:
        rows = rng.permutation(10 * n + 1)[:n].astype(np.int32)
        scores = rng.integers(0, 6, size=n).astype(np.float32) / 4      # many equal, some zero
        order = np.lexsort((rows, -scores))[:k]
        got_rows, got_scores = top_k(rows, scores, k)
        assert got_rows.dtype == np.int32 and got_scores.dtype == np.float32
        assert got_rows.tolist() == rows[order].tolist() and got_scores.tolist() == scores[order].tolist()


def _is_mapped(arr) -> bool:
    while arr is not None and not isinstance(arr, np.memmap):
        arr = getattr(arr, "base", None)
    return arr is not None


def test_memory_mapped_index_serves_without_copying(tmp_path):
    texts = synthetic_texts(300, seed=6)
    index = BM25Index.build([f"d{i}" for i in range(len(texts))], texts, Analyzer(), show_progress=False)
    loaded = BM25Index.load(index.save(tmp_path / "idx"), mmap=True)
    queries = synthetic_texts(20, seed=7)
    assert loaded.search(queries, 10) == index.search(queries, 10)
    # Searching left the matrix mapped: no conversion copied it into memory.
    assert all(_is_mapped(a) for a in (loaded.matrix.data, loaded.matrix.indices, loaded.matrix.indptr))

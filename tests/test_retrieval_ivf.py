"""IVF index: recall against the exact index on a clustered corpus, nprobe = nlist gives the exact
top k, the same lists and results as faiss IndexIVFFlat given our centroids, 1 vs 2 threads,
seeded k-means, save/load with format checks."""
from __future__ import annotations

import numpy as np
import pytest

from bench.dense import clustered_unit_vectors, recall
from deepretrieval.retrieval.dense_index import ExactIndex
from deepretrieval.retrieval.index_store import IndexFormatError, write_index
from deepretrieval.retrieval.ivf_index import IVFIndex, train_centroids
from test_retrieval_dense import differences_outside_ties

DIM, NLIST = 64, 64


@pytest.fixture(scope="module")
def corpus():
    """20,000 documents and 300 queries around 200 random centres (more centres than lists)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return clustered_unit_vectors(20_000, centres, 0.8, rng), clustered_unit_vectors(300, centres, 0.8, rng)


@pytest.fixture(scope="module")
def ivf(corpus):
    docs, _ = corpus
    return IVFIndex.build(docs, [f"d{i}" for i in range(len(docs))], nlist=NLIST, seed=0)


@pytest.fixture(scope="module")
def exact(corpus):
    docs, queries = corpus
    scores, rows = ExactIndex(docs, list(range(len(docs)))).search_embeddings(queries, 101)
    return scores.numpy(), rows.numpy()


def test_ivf_recall_against_exact(corpus, ivf, exact):
    _, queries = corpus
    found = {}
    for nprobe in (1, 2, 8):
        _, rows = ivf.search_embeddings(queries, 100, nprobe=nprobe)
        found[nprobe] = (recall(rows[:, :10].numpy(), exact[1][:, :10]), recall(rows.numpy(), exact[1][:, :100]))
    print(f"\nrecall@10 / recall@100 by nprobe (nlist {NLIST}): {found}")
    assert found[8][0] >= 0.95 and found[8][1] >= 0.95
    assert found[1][1] < 0.95                   # one list is not enough here: the bound above means something
    assert found[1] <= found[2] <= found[8]
    scores, rows = ivf.search_embeddings(queries, 100, nprobe=NLIST)     # every list: the exact top k
    np.testing.assert_allclose(scores.numpy(), exact[0][:, :100], atol=1e-6)
    assert differences_outside_ties(rows.numpy(), exact[1], exact[0]) == 0


def test_ivf_equals_faiss_ivfflat_given_our_centroids(corpus, ivf):
    faiss = pytest.importorskip("faiss")
    docs, queries = corpus
    quantizer = faiss.IndexFlatIP(DIM)
    quantizer.add(ivf.centroids)
    ref = faiss.IndexIVFFlat(quantizer, DIM, NLIST, faiss.METRIC_INNER_PRODUCT)
    ref.train(docs)                             # a quantizer holding nlist centroids is kept as it is
    ref.add(docs)
    assert [ref.invlists.list_size(i) for i in range(NLIST)] == np.diff(ivf.offsets).tolist()
    for nprobe, k in ((1, 10), (4, 100)):
        ref.nprobe = nprobe
        ref_scores, ref_rows = ref.search(queries, k + 1)
        scores, rows = ivf.search_embeddings(queries, k, nprobe=nprobe)
        ok = ref_rows[:, k - 1] >= 0                                  # faiss pads short results with -1
        np.testing.assert_allclose(scores.numpy()[ok], ref_scores[ok, :k], atol=1e-5)
        assert differences_outside_ties(rows.numpy(), ref_rows, ref_scores) == 0


def test_ivf_threads_and_seeded_kmeans(corpus, ivf):
    docs, queries = corpus
    one_s, one_r = (x.numpy() for x in ivf.search_embeddings(queries, 11, nprobe=8, threads=1))
    two_s, two_r = (x.numpy() for x in ivf.search_embeddings(queries, 10, nprobe=8, threads=2))  # 2 chunks
    # Each list's product has other shapes in a chunk of half the queries: last-bit differences.
    np.testing.assert_allclose(two_s, one_s[:, :10], atol=1e-6)
    assert differences_outside_ties(two_r, one_r, one_s) == 0
    again = train_centroids(docs, NLIST, seed=0)
    assert np.array_equal(again, ivf.centroids)
    assert not np.allclose(train_centroids(docs, NLIST, seed=1), ivf.centroids)
    with pytest.raises(ValueError, match="cannot train 64 lists"):
        train_centroids(docs[:10], NLIST)


def test_ivf_save_load(tmp_path, corpus, ivf):
    _, queries = corpus
    path = ivf.save(tmp_path / "ivf")
    loaded = IVFIndex.load(path)
    assert loaded.nlist == NLIST and loaded.nprobe == ivf.nprobe and loaded.doc_ids[7] == "d7"
    before, after = ivf.search_embeddings(queries, 10), loaded.search_embeddings(queries, 10)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before, after))
    (path / "vectors.npy").write_bytes((path / "vectors.npy").read_bytes()[:-4])
    with pytest.raises(IndexFormatError, match="vectors.npy fails its SHA-256"):
        IVFIndex.load(path)
    arrays = {"centroids": ivf.centroids, "offsets": ivf.offsets[:-1], "rows": ivf.rows, "vectors": ivf.vectors,
              "doc_ids.blob": np.zeros(0, np.uint8), "doc_ids.offsets": np.zeros(1, np.int64)}
    write_index(tmp_path / "bad", "ivf", {"nlist": NLIST, "nprobe": 8}, arrays)
    with pytest.raises(IndexFormatError, match="do not fit together"):
        IVFIndex.load(tmp_path / "bad")

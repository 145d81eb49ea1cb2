"""Dense retrieval: our BERT encoder equals sentence-transformers (all-MiniLM-L6-v2), the exact
index equals faiss IndexFlatIP (1 and 2 threads, lower-bound and sampled thresholds, the fallback
when a sampled threshold is too high), checkpoint loading checks every key and shape, save/load."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deepretrieval.retrieval import exact_topk
from deepretrieval.retrieval.beir import load_beir
from deepretrieval.retrieval.bert_encoder import builtin_model_dir, load_bert, load_encoder
from deepretrieval.retrieval.dense_index import DenseRetriever, ExactIndex
from deepretrieval.retrieval.index_store import IndexFormatError
from deepretrieval.retrieval.metrics import evaluate

MTEB_SCIFACT_MINILM = 0.6451     # DESIGN.md: sentence-transformers pipeline, SciFact test NDCG@10


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    return load_beir(scifact_dir, "test")


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def st_model():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(builtin_model_dir()), device="cpu")


def _cosines(ours: torch.Tensor, ref) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(ours, torch.as_tensor(ref).float(), dim=-1)


def test_minilm_embeddings_equal_sentence_transformers(scifact, encoder, st_model):
    # Long abstracts (truncated at 256 tokens) and short queries, in one call each.
    texts = scifact.doc_texts[:128] + list(scifact.queries.values())[:64] + ["", "a", "Vitamin D's role?"]
    ours = encoder.encode(texts, batch_size=32)
    ref = st_model.encode(texts, batch_size=32, convert_to_tensor=True)
    cos = _cosines(ours, ref)
    print(f"\n{len(texts)} texts: min cosine ours vs sentence-transformers {cos.min():.7f}, "
          f"max abs diff {(ours - ref.float()).abs().max():.2e}")
    assert cos.min() >= 0.9999
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(texts)), atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(5400)   # two encodes of 5,183 abstracts: 33 min wall, 15 CPU-min on the busy 2-core dev box
def test_minilm_scifact_ndcg_equals_sentence_transformers(scifact, encoder, st_model):
    texts, queries = scifact.doc_texts, list(scifact.queries.values())
    results = {}
    for name, encode in (("ours", lambda t, kind: encoder.encode(t, kind=kind, batch_size=64)),
                         ("sentence-transformers", lambda t, kind: torch.as_tensor(
                             st_model.encode(t, batch_size=64, convert_to_tensor=True)).float())):
        docs, qs = encode(texts, "doc"), encode(queries, "query")
        results[name] = (docs, qs)
    cos = _cosines(results["ours"][0], results["sentence-transformers"][0])
    ndcg = {}
    for name, (docs, qs) in results.items():
        _, rows = ExactIndex(docs, scifact.doc_ids).search_embeddings(qs, 10)
        run = {q: [scifact.doc_ids[r] for r in rr] for q, rr in zip(scifact.queries, rows.tolist())}
        ndcg[name] = evaluate(run, scifact.qrels, ["ndcg@10"]).mean["ndcg@10"]
    print(f"\nSciFact corpus: min doc cosine {cos.min():.7f}; NDCG@10 ours {ndcg['ours']:.4f}, "
          f"sentence-transformers {ndcg['sentence-transformers']:.4f}, MTEB {MTEB_SCIFACT_MINILM}")
    assert cos.min() >= 0.9999
    assert abs(ndcg["ours"] - ndcg["sentence-transformers"]) < 0.002
    assert abs(ndcg["ours"] - MTEB_SCIFACT_MINILM) < 0.002


def _random_unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def differences_outside_ties(rows: np.ndarray, ref_rows: np.ndarray, ref_scores: np.ndarray,
                             atol: float = 1e-6) -> int:
    """Places where rows [Q, k] differ from ref_rows at a score no neighbour in ref_scores [Q, m]
    (best first, m > k shows a tie at the cut) is within atol of: ties may come in any order."""
    k = rows.shape[1]
    near = np.abs(np.diff(ref_scores, axis=1)) <= atol                     # [Q, m - 1]: j ties j + 1
    tied = np.zeros(ref_scores.shape, dtype=bool)
    tied[:, :-1] |= near
    tied[:, 1:] |= near
    return int(((rows != ref_rows[:, :k]) & ~tied[:, :k]).sum())


@pytest.mark.parametrize("threads", [1, 2])
# k=10: a first-block lower bound; 1000 and 2500: a sampled threshold; 300: a lower bound that
# starts at -inf (the first block holds fewer than k); 2500 and 300: k > block.
@pytest.mark.parametrize("k, block_size", [(10, 3000), (1000, 3000), (2500, 1000), (300, 200)])
def test_exact_index_equals_faiss_flat_ip(k, block_size, threads):
    docs, queries = _random_unit(20_000, 384, 0), _random_unit(200, 384, 1)
    index = ExactIndex(docs, [str(i) for i in range(len(docs))], block_size=block_size, query_block=128,
                       threads=threads, prefilter=False)  # 2 query blocks, the second of 72: one chunk
    assert_equals_faiss_flat_ip(index, docs, queries, k, f"k={k} threads={threads}")


def assert_equals_faiss_flat_ip(index: ExactIndex, docs: np.ndarray, queries: np.ndarray, k: int, label: str):
    """index's top k for queries equals faiss IndexFlatIP's over docs: scores within 1e-5, ids
    outside ties."""
    faiss = pytest.importorskip("faiss")          # absent on the GPU machine; always here (CI)
    ref = faiss.IndexFlatIP(docs.shape[1])
    ref.add(docs)
    ref_scores, ref_rows = ref.search(queries, k + 1)    # the (k+1)-th shows a tie at the cut
    scores, rows = index.search_embeddings(queries, k)
    np.testing.assert_allclose(scores.numpy(), ref_scores[:, :k], atol=1e-5)
    diffs = differences_outside_ties(rows.numpy(), ref_rows, ref_scores)
    print(f"\n{label}: {queries.shape[0]} queries, {diffs} id differences outside ties")
    assert diffs == 0


def test_sampled_threshold_too_high_falls_back_to_exact(monkeypatch):
    # For a large k the threshold is a guess from a strided sample of the corpus; here every
    # sampled document is close to query 0, so its guess lets fewer than k documents through
    # for that query (and a few near it), searched again (sample=False) and still exact.
    faiss = pytest.importorskip("faiss")
    n, k = 20_000, 1000
    docs, queries = _random_unit(n, 64, 4), _random_unit(100, 64, 5)
    stride = n // exact_topk._sample_size(n, k)
    docs[::stride] = queries[0] + 0.05 * _random_unit(len(docs[::stride]), 64, 6)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    searched_again = []
    search_chunk = exact_topk._search_chunk
    monkeypatch.setattr(exact_topk, "_search_chunk", lambda q, *a, sample: (
        searched_again.append(q) if not sample else None, search_chunk(q, *a, sample=sample))[1])
    ref = faiss.IndexFlatIP(64)
    ref.add(docs)
    ref_scores, ref_rows = ref.search(queries, k + 1)
    for threads in (1, 2):
        scores, rows = exact_topk.top_k_inner_product(queries, docs, k, threads=threads)
        np.testing.assert_allclose(scores, ref_scores[:, :k], atol=1e-5)
        assert differences_outside_ties(rows, ref_rows, ref_scores) == 0
    assert len(searched_again) == 2          # once per run: query 0 among a few
    assert all(len(q) < 10 and (q == queries[0]).all(1).any() for q in searched_again)


@pytest.mark.gpu
def test_exact_index_and_encoder_on_gpu(encoder):
    docs, queries = _random_unit(50_000, 384, 2), _random_unit(100, 384, 3)
    cpu_scores, cpu_rows = ExactIndex(docs, list(range(len(docs)))).search_embeddings(queries, 100)
    gpu = ExactIndex(docs, list(range(len(docs))), device="cuda", dtype=torch.float16, block_size=8192)
    gpu_scores, gpu_rows = gpu.search_embeddings(queries, 100)
    overlap = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(cpu_rows.tolist(), gpu_rows.cpu().tolist())])
    assert overlap > 0.98 and torch.allclose(gpu_scores.cpu(), cpu_scores, atol=2e-3)
    texts = ["What causes cancer?", "Vitamin D and bone density in older adults."] * 8
    gpu_enc = load_encoder("all-MiniLM-L6-v2", device="cuda")
    assert _cosines(gpu_enc.encode(texts), encoder.encode(texts)).min() >= 0.9999


def test_checkpoint_key_and_shape_checks(tmp_path):
    src = builtin_model_dir()
    weights = load_file(src / "model.safetensors")
    shutil.copy(src / "config.json", tmp_path / "config.json")
    bad = dict(weights)
    bad["encoder.layer.2.attention.self.key.weight"] = torch.zeros(384, 383)
    save_file(bad, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"encoder.layer.2.attention.self.key.weight' has shape \(384, 383\)"):
        load_bert(tmp_path)
    missing = {k: v for k, v in weights.items() if k != "encoder.layer.5.output.dense.bias"}
    save_file(missing, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="1 weights missing.*encoder.layer.5.output.dense.bias"):
        load_bert(tmp_path)
    save_file({**weights, "encoder.layer.0.extra": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected weight 'encoder.layer.0.extra'"):
        load_bert(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="unsupported BERT variant"):
        load_bert(tmp_path)


def test_dense_retriever_save_load(tmp_path, encoder, scifact):
    ids, texts = scifact.doc_ids[:50], scifact.doc_texts[:50]
    retriever = DenseRetriever.build(encoder, ids, texts, model="all-MiniLM-L6-v2")
    queries = list(scifact.queries.values())[:5]
    before = retriever.search(queries, 5)
    path = retriever.save(tmp_path / "dense")
    loaded = DenseRetriever.load(path)
    after = loaded.search(queries, 5)
    assert [[d for d, _ in h] for h in after] == [[d for d, _ in h] for h in before]
    np.testing.assert_allclose([[s for _, s in h] for h in after], [[s for _, s in h] for h in before], atol=1e-6)
    (path / "embeddings.npy").write_bytes((path / "embeddings.npy").read_bytes()[:-4])
    with pytest.raises(IndexFormatError, match="embeddings.npy fails its SHA-256"):
        DenseRetriever.load(path)

"""eval-retrieval and build-index commands end to end on SciFact (BM25), and open_index."""
from __future__ import annotations

import json

import pytest

from deepretrieval.cli import main
from deepretrieval.retrieval.beir import load_beir
from deepretrieval.retrieval.saved_index import open_index


def test_eval_retrieval_bm25_json(scifact_dir, capsys):
    assert main(["eval-retrieval", "--beir", str(scifact_dir), "--split", "test", "--retriever", "bm25",
                 "--k1", "0.9", "--b", "0.4", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    print(f"\n{out}")
    assert out["num_queries"] == 300 and out["unknown_doc_ids"] == 0
    assert out["ndcg@10"] == pytest.approx(0.6713, abs=5e-4)
    assert out["recall@100"] == pytest.approx(0.9187, abs=5e-4)


def test_build_index_then_search_and_eval(scifact_dir, tmp_path, capsys):
    out = tmp_path / "scifact.bm25"
    assert main(["build-index", "--beir", str(scifact_dir), "--out", str(out), "--k1", "1.2", "--b", "0.75",
                 "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["num_docs"] == 5183 and built["retriever"] == "bm25"
    index = open_index(out)
    hits = index.search("0-dimensional biomaterials show inductive properties.", k=5)
    assert index.kind == "bm25" and len(hits) == 5 and hits[0][1] >= hits[-1][1] > 0
    assert main(["eval-retrieval", "--beir", str(scifact_dir), "--index", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_queries"] == 300


def test_clear_errors(scifact_dir, tmp_path):
    with pytest.raises(SystemExit, match="corpus.jsonl is missing"):
        main(["eval-retrieval", "--beir", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a saved index"):
        main(["eval-retrieval", "--beir", str(scifact_dir), "--index", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown metric 'ndcg10'"):
        main(["eval-retrieval", "--beir", str(scifact_dir), "--metrics", "ndcg10"])


def test_dense_build_search_and_eval_on_a_small_beir_folder(scifact_dir, tmp_path, capsys):
    """12 SciFact test queries over their relevant abstracts plus 24 others (MiniLM on CPU)."""
    ds = load_beir(scifact_dir, "test")
    qids = list(ds.qrels)[:12]
    wanted = {d for q in qids for d in ds.qrels[q]}
    keep = list(dict.fromkeys([i for i, d in enumerate(ds.doc_ids) if d in wanted][:24] + list(range(24))))
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": ds.doc_ids[i], "title": "", "text": ds.doc_texts[i]}) + "\n" for i in keep))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": ds.queries[q]}) + "\n" for q in qids))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in qids for d, r in ds.qrels[q].items()))
    assert main(["eval-retrieval", "--beir", str(folder), "--retriever", "dense", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    print(f"\n{out}")
    assert out["num_queries"] == 12 and out["model"] == "all-MiniLM-L6-v2"
    assert out["ndcg@10"] > 0.6 and out["recall@100"] == 1.0       # every relevant doc is in the corpus
    index_dir = tmp_path / "mini.dense"
    assert main(["build-index", "--beir", str(folder), "--out", str(index_dir), "--retriever", "dense"]) == 0
    index = open_index(index_dir)
    hits = index.search(ds.queries[qids[0]], k=3)
    assert index.kind == "dense" and len(hits) == 3 and hits[0][0] in ds.qrels[qids[0]]

"""`deepretrieval build-index`: build and save a BM25 or dense index of a BEIR corpus.

    deepretrieval build-index --beir builtin:scifact --out runs/scifact.bm25
    deepretrieval build-index --beir DIR --out runs/scifact.minilm --retriever dense --model all-MiniLM-L6-v2
    deepretrieval search --index runs/scifact.bm25 "vitamin D and bone density"

--beir is a BEIR folder or a built-in dataset (builtin:scifact, unpacked on first use).
Documents are indexed as title + "\\n" + text. The retriever options defined here
(`add_retriever_arguments`, `build_retriever`, `beir_folder`, `open_saved_index`) are shared
with `eval-retrieval` and `search`.
"""
from __future__ import annotations

import argparse
import json
import time

from deepretrieval.cli import device_or_exit

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_retriever_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beir", required=True,
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or builtin:scifact")
    parser.add_argument("--retriever", choices=["bm25", "dense"], default="bm25")
    g = parser.add_argument_group("bm25")
    g.add_argument("--k1", type=float, default=0.9)
    g.add_argument("--b", type=float, default=0.4)
    g.add_argument("--stemmer", default="porter", help="PyStemmer algorithm, or 'none' (default: porter)")
    g.add_argument("--stopwords", default="english", help="'english' (Lucene's list) or 'none'")
    g = parser.add_argument_group("dense")
    g.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="all-MiniLM-L6-v2 (built in), or a local checkpoint folder (bge-base-en-v1.5, e5-*, contriever*)")
    g.add_argument("--device", default="cpu", help="auto, cpu (default), cuda or cuda:N")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="encoder and index dtype")
    g.add_argument("--batch-size", type=int, default=64)


def build_retriever(args: argparse.Namespace, doc_ids: list[str], texts: list[str]):
    """A BM25Index or DenseRetriever over the documents, as the arguments say."""
    if args.retriever == "bm25":
        from deepretrieval.retrieval.analyzer import Analyzer
        from deepretrieval.retrieval.bm25 import BM25Index
        try:
            analyzer = Analyzer(stopwords=None if args.stopwords == "none" else args.stopwords,
                                stemmer=None if args.stemmer == "none" else args.stemmer)
        except ValueError as exc:
            raise SystemExit(f"build-index: {exc}") from exc
        return BM25Index.build(doc_ids, texts, analyzer, k1=args.k1, b=args.b)
    import torch
    from deepretrieval.retrieval.bert_encoder import load_encoder
    from deepretrieval.retrieval.dense_index import DenseRetriever
    device = str(device_or_exit(args.device))
    encoder = load_encoder(args.model, device=device, dtype=getattr(torch, DTYPES[args.dtype]))
    return DenseRetriever.build(encoder, doc_ids, texts, model=args.model, batch_size=args.batch_size)


def beir_folder(spec: str) -> str:
    """--beir as a folder: builtin:NAME is the built-in dataset, unpacked on first use."""
    from deepretrieval.tasks.packaged_data import resolve_data_path
    return resolve_data_path(spec)


def open_saved_index(path: str, device_name: str, command: str):
    """A saved index (retrieval.saved_index); the device is checked (and used) for a dense one only,
    so a BM25 index never loads torch."""
    from deepretrieval.retrieval.index_store import IndexFormatError, read_meta
    from deepretrieval.retrieval.saved_index import open_index
    try:
        dense = read_meta(path)["kind"] == "dense"
        return open_index(path, device=str(device_or_exit(device_name)) if dense else "cpu")
    except (IndexFormatError, FileNotFoundError) as exc:
        raise SystemExit(f"{command}: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retriever_arguments(parser)
    parser.add_argument("--out", required=True, help="folder to write the index to")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path
    from deepretrieval.retrieval.beir import BeirFormatError, load_corpus
    t0 = time.perf_counter()
    try:
        doc_ids, texts = load_corpus(Path(beir_folder(args.beir)) / "corpus.jsonl")
    except (FileNotFoundError, BeirFormatError) as exc:
        raise SystemExit(str(exc)) from exc
    retriever = build_retriever(args, doc_ids, texts)
    path = retriever.save(args.out)
    summary = {"index": str(path), "retriever": args.retriever, "num_docs": len(doc_ids),
               "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(summary) if args.json else
          f"wrote {args.retriever} index of {len(doc_ids)} docs to {path} in {summary['seconds']} s")
    return 0

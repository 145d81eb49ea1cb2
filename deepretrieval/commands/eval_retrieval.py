"""`deepretrieval eval-retrieval`: NDCG@10, Recall@100 (and more) of BM25 or a dense retriever on a
BEIR folder.

    deepretrieval eval-retrieval --beir builtin:scifact --split test --retriever bm25
    deepretrieval eval-retrieval --beir DIR --retriever bm25 --k1 1.2 --b 0.75 --json
    deepretrieval eval-retrieval --beir DIR --retriever dense --model all-MiniLM-L6-v2 --device cuda
    deepretrieval eval-retrieval --beir DIR --index runs/scifact.bm25      # a saved index

With --json it prints one JSON object with keys ndcg@10, recall@100, num_queries, every metric
asked for, the retriever's settings and the loader's report (unknown ids in the qrels).
"""
from __future__ import annotations

import argparse
import json
import time

from .build_index import add_retriever_arguments, beir_folder, build_retriever, open_saved_index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retriever_arguments(parser)
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv (default: test)")
    parser.add_argument("--index", help="evaluate this saved index instead of building one")
    parser.add_argument("--metrics", default="ndcg@10,recall@100,mrr@10,hits@10",
                        help="comma-separated NAME@K (ndcg, recall, hits, mrr)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.retrieval.beir import BeirFormatError, load_beir
    from deepretrieval.retrieval.metrics import evaluate, parse_metric

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(["ndcg@10", "recall@100", *metrics]))
    try:
        depth = max(parse_metric(m)[1] for m in metrics)
        ds = load_beir(beir_folder(args.beir), args.split)
    except (ValueError, FileNotFoundError, BeirFormatError) as exc:
        raise SystemExit(f"eval-retrieval: {exc}") from exc
    t0 = time.perf_counter()
    if args.index:
        retriever = open_saved_index(args.index, args.device, "eval-retrieval").engine
    else:
        retriever = build_retriever(args, ds.doc_ids, ds.doc_texts)
    t1 = time.perf_counter()
    hits = retriever.search(list(ds.queries.values()), depth)
    t2 = time.perf_counter()
    result = evaluate({q: [d for d, _ in h] for q, h in zip(ds.queries, hits)}, ds.qrels, metrics)

    settings = ({"index": args.index} if args.index else
                {"k1": args.k1, "b": args.b, "stemmer": args.stemmer, "stopwords": args.stopwords}
                if args.retriever == "bm25" else {"model": args.model, "device": args.device, "dtype": args.dtype})
    record = {**{m: round(result.mean[m], 6) for m in metrics}, "num_queries": len(ds.qrels),
              "retriever": "index" if args.index else args.retriever, **settings, "split": args.split,
              "index_seconds": round(t1 - t0, 3), "search_seconds": round(t2 - t1, 3),
              "unknown_query_ids": len(ds.report.unknown_query_ids),
              "unknown_doc_ids": len(ds.report.unknown_doc_ids)}
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{args.beir} ({args.split}): {ds.report}")
        for m in metrics:
            print(f"  {m:<12}{result.mean[m]:.4f}")
        print(f"  over {len(ds.qrels)} judged queries; index {record['index_seconds']} s, "
              f"search {record['search_seconds']} s")
    return 0

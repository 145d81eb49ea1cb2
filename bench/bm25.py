"""BM25 benchmark: index build time and queries/s (1 thread) on SciFact, ours vs bm25s.

    python -m bench.bm25                       # the built-in SciFact, best of 5 rounds
    python -m bench.bm25 --beir DIR --repeats 5

Both engines get the same analysis (lowercase, Lucene's stop words, Snowball English stemming) and
the timings include it: build = texts -> index; search = all 1,109 query texts -> top-k rows and
scores, for k = 10 and k = 1000, timed in CPU seconds of the (single-threaded) process, which a
busy shared machine disturbs far less than wall time. BM25 runs on the CPU by design (sparse
products), so there is no --device; where bm25s is not installed (e.g. the GPU machine) its
column is skipped with a note.
Appends one JSON line per measurement to bench/results/bm25.jsonl.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")          # 1 thread, before numpy/scipy load BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path

from bench.results_log import append_result
from deepretrieval.retrieval.analyzer import Analyzer
from deepretrieval.retrieval.beir import load_corpus, load_queries
from deepretrieval.tasks.packaged_data import resolve_data_path
from deepretrieval.retrieval.bm25 import BM25Index



def interleaved(repeats: int, cases: dict):
    """{name: (best CPU seconds, last result)}: the cases run in turn, `repeats` rounds. Everything
    here is single-threaded, so the process's CPU time is the work done, and unlike wall time it
    does not count the time other processes hold the core on a shared machine."""
    best = {name: (float("inf"), None) for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.process_time()
            out = fn()
            best[name] = (min(best[name][0], time.process_time() - t), out)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", default="builtin:scifact", help="BEIR folder (default: the built-in SciFact)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    doc_ids, texts = load_corpus(Path(resolve_data_path(args.beir)) / "corpus.jsonl")
    queries = list(load_queries(Path(resolve_data_path(args.beir)) / "queries.jsonl").values())
    print(f"{len(texts)} docs, {len(queries)} queries, best of {args.repeats} interleaved rounds")
    try:
        import bm25s
        import Stemmer
        stemmer = Stemmer.Stemmer("english")
    except ImportError as exc:
        bm25s = None
        print(f"note: bm25s reference skipped ({exc})")

    def bm25s_build():
        ref = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
        ref.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                  show_progress=False)
        return ref

    # A fresh Analyzer per build, so its word memo starts empty as bm25s's tokenizer does.
    build = {"ours": lambda: BM25Index.build(doc_ids, texts, Analyzer(stemmer="english"), show_progress=False)}
    if bm25s is not None:
        build["bm25s"] = bm25s_build
    built = interleaved(args.repeats, build)
    index = built["ours"][1]
    records = {"build": {f"{name}_s": t for name, (t, _) in built.items()}}
    for k in (10, 1000):
        search = {"ours": lambda: index.search_tokens(index.analyzer.tokenize_batch(queries), k)}
        if bm25s is not None:
            search["bm25s"] = lambda: built["bm25s"][1].retrieve(
                bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
                k=k, show_progress=False, n_threads=1)
        records[f"search_top{k}"] = {f"{name}_qps": len(queries) / t
                                     for name, (t, _) in interleaved(args.repeats, search).items()}
    for name, r in records.items():
        if "bm25s_s" in r:
            r["speedup"] = r["bm25s_s"] / r["ours_s"]
        elif "bm25s_qps" in r:
            r["speedup"] = r["ours_qps"] / r["bm25s_qps"]
        print(f"{name:<16}" + "  ".join(f"{key} {val:,.3f}" for key, val in r.items()))
        append_result("bm25", {"case": name, "docs": len(texts), "queries": len(queries), "threads": 1,
                               "timing": "cpu",
                               **{key: round(val, 4) for key, val in r.items()}})


if __name__ == "__main__":
    main()

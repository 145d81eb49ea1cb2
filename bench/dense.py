"""Dense retrieval benchmark: exact top-k search vs faiss IndexFlatIP, encoder docs/s vs
sentence-transformers.

    python -m bench.dense                                  # CPU: search at 1 and 2 threads, encoder
    python -m bench.dense --device cuda                    # GPU: our index (fp32, fp16) and encoder
    python -m bench.dense --skip-encoder --docs 5183,100000 --k 10,1000

Search: 1,109 queries (SciFact's count) against random unit vectors of MiniLM's width (384) —
exact search costs the same whatever the vectors hold — for each corpus size, k and thread count;
faiss-cpu's IndexFlatIP is the reference (skipped with a note where faiss is not installed, as on
the GPU machine). Encoder: the first --encode-docs SciFact abstracts (title + text, up to 256
tokens) with all-MiniLM-L6-v2 (or --model), ours vs sentence-transformers on the same device,
batch 64 (fp16 too on a GPU).
Cases run interleaved, best of --repeats, so both sides see the same load on a shared machine;
single-threaded CPU cases are timed in process CPU time, the others in wall time.
Appends one JSON line per case to bench/results/dense.jsonl.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.results_log import append_result
from retrieval.beir import load_corpus
from retrieval.bert_encoder import load_encoder, resolve
from retrieval.dense_index import ExactIndex

DEFAULT_BEIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def interleaved(repeats: int, cases: dict, sync=lambda: None, clock=time.perf_counter) -> dict[str, float]:
    """{name: best seconds by `clock`}; the cases run in turn, `repeats` rounds."""
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync()
            t = clock()
            fn()
            sync()
            best[name] = min(best[name], clock() - t)
    return best


def clock_for(threads: int, cuda: bool):
    """CPU time of the process for single-threaded CPU cases (what a busy shared machine disturbs
    least), wall time otherwise (several threads, or a GPU)."""
    return ("cpu", time.process_time) if threads == 1 and not cuda else ("wall", time.perf_counter)


def optional_import(name: str):
    try:
        return __import__(name)
    except ImportError as exc:
        print(f"note: {name} reference skipped ({exc})")
        return None


def set_threads(n: int) -> None:
    """n threads for torch and for every BLAS / OpenMP pool loaded (numpy's OpenBLAS included)."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl missing; numpy's BLAS keeps its default thread count")
        return
    threadpool_limits(limits=n)


def bench_search(args, faiss) -> None:
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((1109, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for n_docs in args.docs:
        docs = rng.standard_normal((n_docs, 384)).astype(np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        ids = list(range(n_docs))
        ours = {"ours_fp32": ExactIndex(docs, ids, device=args.device)}
        if cuda:
            ours["ours_fp16"] = ExactIndex(docs, ids, device=args.device, dtype=torch.float16)
        ref = None
        if faiss is not None:
            ref = faiss.IndexFlatIP(384)
            ref.add(docs)
        for threads in args.threads:
            set_threads(threads)
            if faiss is not None:
                faiss.omp_set_num_threads(threads)
            for k in args.k:
                cases = {name: (lambda ix=ix: ix.search_embeddings(queries, k)) for name, ix in ours.items()}
                if ref is not None:
                    cases["faiss"] = lambda: ref.search(queries, k)
                timing, clock = clock_for(threads, cuda)
                qps = {name: len(queries) / t for name, t in interleaved(args.repeats, cases, sync, clock).items()}
                record = {"case": "search", "docs": n_docs, "queries": len(queries), "dim": 384, "k": k,
                          "threads": threads, "timing": timing, "device_used": args.device,
                          **{f"{name}_qps": round(v, 1) for name, v in qps.items()}}
                if "faiss" in qps:
                    record["speedup"] = round(qps["ours_fp32"] / qps["faiss"], 3)
                print(f"search docs={n_docs} k={k} threads={threads} ({timing} time): " +
                      "  ".join(f"{name} {v:,.0f} q/s" for name, v in qps.items()) +
                      (f"  speedup {record['speedup']:.2f}x" if "speedup" in record else ""))
                append_result("dense", record)


def bench_encoder(args, st) -> None:
    _, texts = load_corpus(Path(args.beir) / "corpus.jsonl")
    texts = texts[:args.encode_docs]
    set_threads(max(args.threads))
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cases = {"ours_fp32": lambda enc=load_encoder(args.model, device=args.device): enc.encode(texts, batch_size=64)}
    if cuda:
        enc16 = load_encoder(args.model, device=args.device, dtype=torch.float16)
        cases["ours_fp16"] = lambda: enc16.encode(texts, batch_size=64)
    if st is not None:
        model = st.SentenceTransformer(str(resolve(args.model)[0]), device=args.device)
        cases["sentence_transformers"] = lambda: model.encode(texts, batch_size=64)
    timing, clock = clock_for(max(args.threads), cuda)
    dps = {name: len(texts) / t for name, t in interleaved(args.repeats, cases, sync, clock).items()}
    record = {"case": "encode", "docs": len(texts), "model": args.model, "batch_size": 64,
              "threads": torch.get_num_threads(), "timing": timing, "device_used": args.device,
              **{f"{name}_docs_per_s": round(v, 2) for name, v in dps.items()}}
    if "sentence_transformers" in dps:
        record["speedup"] = round(dps["ours_fp32"] / dps["sentence_transformers"], 3)
    print(f"encode {len(texts)} docs on {args.device}: " + "  ".join(f"{n} {v:,.1f} docs/s" for n, v in dps.items()) +
          (f"  speedup {record['speedup']:.2f}x" if "speedup" in record else ""))
    append_result("dense", record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--beir", default=str(DEFAULT_BEIR), help="BEIR folder whose corpus the encoder reads")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="built-in name or a sentence-transformers folder")
    parser.add_argument("--docs", default="5183,100000", help="corpus sizes for search")
    parser.add_argument("--k", default="10,1000")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts for search")
    parser.add_argument("--encode-docs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-encoder", action="store_true")
    args = parser.parse_args()
    args.docs = [int(x) for x in args.docs.split(",")]
    args.k = [int(x) for x in args.k.split(",")]
    args.threads = [int(x) for x in args.threads.split(",")]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    if not args.skip_search:
        bench_search(args, optional_import("faiss"))
    if not args.skip_encoder:
        bench_encoder(args, optional_import("sentence_transformers"))


if __name__ == "__main__":
    main()

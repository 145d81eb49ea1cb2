"""Dense retrieval benchmark: exact top-k search vs faiss IndexFlatIP, IVF search vs faiss
IndexIVFFlat, encoder docs/s vs sentence-transformers.

    python -m bench.dense                                  # CPU: search and IVF at 1 and 2 threads, encoder
    python -m bench.dense --device cuda                    # GPU: our index (fp32, fp16) and encoder
    python -m bench.dense --skip-encoder --skip-ivf --docs 5183,100000 --k 10,1000
    python -m bench.dense --skip-encoder --skip-search --ivf-nlist 1024 --ivf-nprobe 8,32

Search: 1,109 queries (SciFact's count) against random unit vectors of MiniLM's width (384) for
each corpus size, k and thread count; faiss-cpu's IndexFlatIP is the reference (skipped with a
note where faiss is not installed, as on the GPU machine). `ours` is ExactIndex's default, which
on a CPU with bf16 dot products takes a bf16 first pass where k is small next to the corpus
(retrieval/bf16_prefilter.py; `bf16_prefilter` in the record); `ours_fp32` has fp32 products
only. An fp32 search costs the same whatever the vectors hold; the bf16 pass sends some queries
back to fp32 where scores crowd at the k-th (14 of 1,109 at 100k random vectors, k = 10; none of
SciFact's MiniLM queries), so random vectors are the harder case for it. IVF (CPU): --ivf-docs unit vectors and 1,109 queries drawn around
--ivf-clusters random centres (an IVF needs a corpus with clusters), ours and IndexIVFFlat each
trained with its own k-means for the same nlist and searched with the same nprobe; queries/s and
recall@k against the exact top k. Encoder: the first --encode-docs SciFact abstracts (title +
text, up to 256 tokens) with all-MiniLM-L6-v2 (or --model), ours vs sentence-transformers on the
same device, batch 64 (fp16 too on a GPU).
Threads: n threads means n for faiss (OpenMP and its BLAS) and torch, and for our CPU indexes n
query chunks searched at once, each with single-threaded numpy BLAS (set here with threadpoolctl).
Each case runs back to back, best of --repeats after a warm-up call (see `best_of` for why not
interleaved); single-threaded CPU cases are timed in process CPU time, the others in wall time.
Appends one JSON line per case to bench/results/dense.jsonl.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.results_log import append_result
from deepretrieval.retrieval.beir import load_corpus
from deepretrieval.retrieval.bert_encoder import load_encoder, resolve
from deepretrieval.retrieval.bf16_prefilter import pays_off
from deepretrieval.retrieval.dense_index import ExactIndex
from deepretrieval.retrieval.ivf_index import IVFIndex
from deepretrieval.tasks.packaged_data import resolve_data_path



def best_of(repeats: int, cases: dict, sync=lambda: None, clock=time.perf_counter) -> dict[str, float]:
    """{name: best seconds by `clock`} of `repeats` timed calls of each case, run back to back after
    one untimed call. Back to back, not interleaved: OpenMP workers (faiss's, torch's) spin for a
    while after a parallel region, and on a 2-core machine that spinning took a core from whatever
    ran next (measured: our 2-thread search at 5,183 docs read 30-33k q/s right after faiss's, 38k
    with OMP_WAIT_POLICY=PASSIVE). So each side is timed in its own steady state, as a stream of
    searches runs."""
    best = {}
    for name, fn in cases.items():
        fn()
        sync()
        times = []
        for _ in range(repeats):
            t = clock()
            fn()
            sync()
            times.append(clock() - t)
        best[name] = min(times)
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
    """n threads for torch and every BLAS / OpenMP pool loaded (faiss's), but 1 for numpy's BLAS:
    our CPU indexes run n query chunks at once, each calling BLAS in its own thread."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        print("note: threadpoolctl missing; numpy's BLAS keeps its default thread count")
        return
    controller = ThreadpoolController()
    controller.limit(limits=n)
    for lib in controller.lib_controllers:
        if lib.user_api == "blas" and "numpy" in lib.filepath:     # numpy.libs/ (Linux), numpy/.dylibs/
            lib.set_num_threads(1)


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
        ours = {"ours": ExactIndex(docs, ids, device=args.device)}   # the default
        if cuda:
            ours["ours_fp16"] = ExactIndex(docs, ids, device=args.device, dtype=torch.float16)
        else:       # fp32 products only: no bf16 first pass (which the default takes where it pays)
            ours["ours_fp32"] = ExactIndex(docs, ids, device=args.device, prefilter=False)
        ref = None
        if faiss is not None:
            ref = faiss.IndexFlatIP(384)
            ref.add(docs)
        for threads in args.threads:
            set_threads(threads)
            if faiss is not None:
                faiss.omp_set_num_threads(threads)
            for ix in ours.values():
                ix.threads = threads
            for k in args.k:
                cases = {name: (lambda ix=ix: ix.search_embeddings(queries, k)) for name, ix in ours.items()}
                if ref is not None:
                    cases["faiss"] = lambda: ref.search(queries, k)
                timing, clock = clock_for(threads, cuda)
                qps = {name: len(queries) / t for name, t in best_of(args.repeats, cases, sync, clock).items()}
                record = {"case": "search", "docs": n_docs, "queries": len(queries), "dim": 384, "k": k,
                          "threads": threads, "timing": timing, "device_used": args.device,
                          **{f"{name}_qps": round(v, 1) for name, v in qps.items()}}
                if "faiss" in qps:
                    record["speedup"] = round(qps["ours"] / qps["faiss"], 3)
                chunk = len(queries) // threads                    # each thread's queries
                record["bf16_prefilter"] = ours["ours"].prefilter and pays_off(k, n_docs, chunk)
                print(f"search docs={n_docs} k={k} threads={threads} ({timing} time): " +
                      "  ".join(f"{name} {v:,.0f} q/s" for name, v in qps.items()) +
                      (f"  speedup {record['speedup']:.2f}x" if "speedup" in record else ""))
                append_result("dense", record)


def clustered_unit_vectors(n: int, centres: np.ndarray, spread: float, rng) -> np.ndarray:
    """n unit vectors [n, D]: each a random one of `centres` [C, D] plus Gaussian noise of norm
    about `spread`, normalised."""
    dim = centres.shape[1]
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))   # [n, D]
    x = centres[rng.integers(0, len(centres), n)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean share of each query's exact top k [Q, k] found among its rows [Q, k]."""
    k = exact_rows.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rows.tolist(), exact_rows.tolist())]))


def bench_ivf(args, faiss) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.ivf_clusters, 384)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    docs = clustered_unit_vectors(args.ivf_docs, centres, args.ivf_spread, rng)
    queries = clustered_unit_vectors(1109, centres, args.ivf_spread, rng)
    ids = list(range(len(docs)))
    set_threads(max(args.threads))
    _, exact = ExactIndex(docs, ids, threads=max(args.threads)).search_embeddings(queries, max(args.ivf_k))
    exact = exact.numpy()
    t = time.perf_counter()
    ours = IVFIndex.build(docs, ids, args.ivf_nlist)
    build = {"ours_build_s": round(time.perf_counter() - t, 2)}
    ref = None
    if faiss is not None:
        t = time.perf_counter()
        ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(384), 384, args.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        ref.train(docs)
        ref.add(docs)
        build["faiss_build_s"] = round(time.perf_counter() - t, 2)
    for threads in args.threads:
        set_threads(threads)
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
        for nprobe in args.ivf_nprobe:
            if ref is not None:
                ref.nprobe = nprobe
            for k in args.ivf_k:
                cases = {"ours": lambda: ours.search_embeddings(queries, k, nprobe, threads)[1].numpy()}
                if ref is not None:
                    cases["faiss"] = lambda: ref.search(queries, k)[1]
                timing, clock = clock_for(threads, False)
                qps = {name: len(queries) / t for name, t in best_of(args.repeats, cases, clock=clock).items()}
                found = {name: recall(fn(), exact[:, :k]) for name, fn in cases.items()}
                record = {"case": "ivf", "docs": len(docs), "queries": len(queries), "dim": 384,
                          "clusters": args.ivf_clusters, "spread": args.ivf_spread, "nlist": args.ivf_nlist,
                          "nprobe": nprobe, "k": k, "threads": threads, "timing": timing, "device_used": "cpu",
                          **{f"{name}_qps": round(v, 1) for name, v in qps.items()},
                          **{f"{name}_recall": round(v, 4) for name, v in found.items()}, **build}
                if "faiss" in qps:
                    record["speedup"] = round(qps["ours"] / qps["faiss"], 3)
                print(f"ivf docs={len(docs)} nlist={args.ivf_nlist} nprobe={nprobe} k={k} threads={threads} "
                      f"({timing} time): " + "  ".join(f"{n} {qps[n]:,.0f} q/s recall@{k} {found[n]:.4f}"
                                                       for n in qps) +
                      (f"  speedup {record['speedup']:.2f}x" if "speedup" in record else ""))
                append_result("dense", record)


def bench_encoder(args, st) -> None:
    _, texts = load_corpus(Path(resolve_data_path(args.beir)) / "corpus.jsonl")
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
    dps = {name: len(texts) / t for name, t in best_of(args.repeats, cases, sync, clock).items()}
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
    parser.add_argument("--beir", default="builtin:scifact", help="BEIR folder whose corpus the encoder reads (default: the built-in SciFact)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="built-in name or a sentence-transformers folder")
    parser.add_argument("--docs", default="5183,100000", help="corpus sizes for search")
    parser.add_argument("--k", default="10,1000")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts for search")
    parser.add_argument("--encode-docs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ivf-docs", type=int, default=100_000, help="IVF corpus size")
    parser.add_argument("--ivf-clusters", type=int, default=1000, help="centres the IVF corpus is drawn around")
    parser.add_argument("--ivf-spread", type=float, default=1.0, help="noise norm around a centre (unit centres)")
    parser.add_argument("--ivf-nlist", type=int, default=1024)
    parser.add_argument("--ivf-nprobe", default="8,32")
    parser.add_argument("--ivf-k", default="10,100")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-ivf", action="store_true")
    parser.add_argument("--skip-encoder", action="store_true")
    args = parser.parse_args()
    args.docs = [int(x) for x in args.docs.split(",")]
    args.k = [int(x) for x in args.k.split(",")]
    args.threads = [int(x) for x in args.threads.split(",")]
    args.ivf_nprobe = [int(x) for x in args.ivf_nprobe.split(",")]
    args.ivf_k = [int(x) for x in args.ivf_k.split(",")]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    if not args.skip_search:
        bench_search(args, optional_import("faiss"))
    if not args.skip_ivf and not args.device.startswith("cuda"):
        bench_ivf(args, optional_import("faiss"))
    if not args.skip_encoder:
        bench_encoder(args, optional_import("sentence_transformers"))


if __name__ == "__main__":
    main()

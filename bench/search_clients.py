"""Search-client benchmark: cached lookups/s of the PubMed client, and queries/s of the offline
MEDLINE backend (Boolean + BM25 ranking) on the built-in corpus, each with its reference.

    python -m bench.search_clients                 # 2,000 cached lookups, 300 offline queries
    python -m bench.search_clients --lookups 5000 --queries 1000

1. Cached lookups: a PubMedClient with an on-disk cache, pointed at the loopback fake engine that
   the tests use (tests/fake_engines.py, serving the real recorded esearch answer of
   tests/data/api_fixtures). N distinct queries are first fetched over HTTP (the reference:
   uncached requests, rate limiter off, so it measures the plumbing and not NCBI's 3/s), then
   fetched again, all from the cache. Ratio = cached lookups/s / uncached requests/s.
2. Offline backend: PubMed-style queries built from the corpus itself (MeSH headings, title words,
   truncation, phrases, NOT, date limits; fixed seed) searched to depth 3,000 with
   `MedlineBackend.search`; the reference is plain BM25 top-3,000 (`BM25Index.search`) of the same
   words over the same index: Boolean matching first, then ranking only the matches, against
   ranking the whole corpus.
One thread; best of `--repeats`. Prints both, and appends a JSON line to
bench/results/search_clients.jsonl.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.results_log import append_result
from deepretrieval.retrieval.http_client import RetryPolicy
from deepretrieval.retrieval.medline_backend import MedlineBackend
from deepretrieval.retrieval.medline_corpus import builtin_corpus_path, load_medline
from deepretrieval.retrieval.pubmed import PubMedClient
from deepretrieval.retrieval.rate_limit import RateLimiter

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "api_fixtures"


def best_rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def bench_cache(n: int, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_engines import FakeEngines   # the test fake: real recorded answers on 127.0.0.1

    queries = [f"artificial intelligence radiology {i}" for i in range(n)]
    with FakeEngines(FIXTURES) as server, tempfile.TemporaryDirectory() as tmp:
        client = PubMedClient(server.eutils_url, page_size=5, cache=Path(tmp) / "cache.sqlite",
                              limiter=RateLimiter(Path(tmp) / "rl", 1000), retry=RetryPolicy(1))
        t = time.perf_counter()
        for q in queries:                      # the reference: every lookup is an HTTP request
            client.search(q, max_results=5)
        uncached = n / (time.perf_counter() - t)
        assert client.http.stats["requests"] == n
        cached = best_rate(lambda: [client.search(q, max_results=5) for q in queries], n, repeats)
        assert client.http.stats["requests"] == n, "a cached lookup went to the server"
    return {"cached_lookups_per_s": round(cached, 1), "uncached_requests_per_s": round(uncached, 1),
            "cache_speedup": round(cached / uncached, 2), "lookups": n}


def make_queries(records, n: int, seed: int = 0) -> list[str]:
    """PubMed-style Boolean queries drawn from the corpus (so most match something)."""
    rng = random.Random(seed)
    with_mesh = [r for r in records if r.mesh]
    queries = []
    for _ in range(n):
        rec = rng.choice(records)
        words = [w for w in re.findall(r"[A-Za-z]{5,}", rec.title)] or ["study"]
        a, b = rng.choice(words), rng.choice(words)
        other = rng.choice(with_mesh)
        heading = rng.choice(other.mesh).replace('"', "")
        shape = rng.randrange(4)
        if shape == 0:
            q = f'({a}[tiab] OR "{heading}"[mh]) AND {b[:5]}*'
        elif shape == 1:
            q = f'"{a} {b}" OR ({a} AND {heading}[mh]) NOT review[pt]'
        elif shape == 2:
            q = f"({a} OR {b}) AND 1970:2019[dp]"
        else:
            q = f"{a}[ti] OR {b}[ab] OR {heading}[mh]"
        queries.append(q)
    return queries


def bench_backend(n: int, repeats: int) -> dict:
    t = time.perf_counter()
    records = load_medline(builtin_corpus_path())
    backend = MedlineBackend(records)
    build_s = time.perf_counter() - t
    queries = make_queries(records, n)
    matched = [len(backend.search(q, 3000)) for q in queries]
    boolean = best_rate(lambda: [backend.search(q, 3000) for q in queries], n, repeats)
    texts = [re.sub(r"\[[^\]]*\]|\b(AND|OR|NOT)\b|[()\"*:]", " ", q) for q in queries]
    plain = best_rate(lambda: [backend.bm25.search([t], 3000) for t in texts], n, repeats)
    return {"offline_queries_per_s": round(boolean, 1), "plain_bm25_queries_per_s": round(plain, 1),
            "offline_vs_bm25": round(boolean / plain, 2), "queries": n, "corpus_docs": len(backend),
            "mean_matches": round(sum(matched) / n, 1), "backend_build_s": round(build_s, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cache = bench_cache(args.lookups, args.repeats)
    print(f"cached lookups: {cache['cached_lookups_per_s']:.0f}/s vs uncached loopback requests "
          f"{cache['uncached_requests_per_s']:.0f}/s (x{cache['cache_speedup']})")
    offline = bench_backend(args.queries, args.repeats)
    print(f"offline MEDLINE backend: {offline['offline_queries_per_s']:.0f} queries/s at depth 3000 "
          f"({offline['corpus_docs']} records, {offline['mean_matches']} matches/query) vs plain BM25 "
          f"{offline['plain_bm25_queries_per_s']:.0f}/s (ratio {offline['offline_vs_bm25']}); "
          f"build {offline['backend_build_s']} s")
    append_result("search_clients", {**cache, **offline, "threads": 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())

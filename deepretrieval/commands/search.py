"""`deepretrieval search`: one query against PubMed, ClinicalTrials.gov, the offline MEDLINE backend
or a saved BM25/dense index.

    deepretrieval search pubmed '(asthma[tiab] OR wheez*) AND budesonide' --max 3000 --max-date 2018/05/17
    deepretrieval search ctgov '"EGFR L858R"' --param query.cond="lung cancer" --json
    deepretrieval search medline 'asthma[mh] NOT review[pt]'           # built-in MEDLINE sample
    deepretrieval search medline 'asthma' --corpus pubmed24n0001.xml.gz  # your MEDLINE files
    deepretrieval search --index runs/scifact.bm25 "what causes cancer" --max 10

Web searches go through the rate-limited, retrying clients and an on-disk cache
($XDG_CACHE_HOME or ~/.cache, deepretrieval/search.sqlite; --cache PATH, --no-cache); a PubMed API
key is read from NCBI_API_KEY. Prints the ids best first (with scores for an index); with --json,
one object: engine, query, ids (or hits), total, seconds, and the requests / cache hits it took.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .build_index import open_saved_index

ENGINES = ("pubmed", "ctgov", "medline")


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepretrieval" / "search.sqlite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("deepretrieval search {pubmed,ctgov,medline} QUERY [options]\n"
                    "       deepretrieval search --index PATH QUERY [options]")
    parser.add_argument("words", nargs="+", metavar="WORD",
                        help=f"the engine ({', '.join(ENGINES)}) then the query (quote it); "
                             f"only the query with --index")
    parser.add_argument("--index", help="search this saved BM25 or dense index instead of an engine")
    parser.add_argument("--max", type=int, default=None,
                        help="how many ids to return (default 3000; 10 with --index)")
    parser.add_argument("--max-date", help="only records published up to this date (YYYY[/MM[/DD]])")
    parser.add_argument("--min-date", help="pubmed/medline: only records published from this date")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="ctgov: another query.*/filter.* parameter (repeatable)")
    parser.add_argument("--corpus", action="append", metavar="XML",
                        help="medline: MEDLINE XML file(s) to search instead of the built-in sample")
    parser.add_argument("--base-url", help="pubmed/ctgov: another server (e.g. a mirror or a test fake)")
    parser.add_argument("--cache", type=Path, default=None, help="cache file (default: under ~/.cache)")
    parser.add_argument("--no-cache", action="store_true", help="always ask the engine")
    parser.add_argument("--device", default="cpu",
                        help="--index: device of a dense index (auto, cpu, cuda or cuda:N)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _engine_search(engine: str, query: str, args, k: int) -> dict:
    from deepretrieval.retrieval.search_backend import SearchError

    cache = None if args.no_cache else (args.cache or default_cache_path())
    url = {"base_url": args.base_url} if args.base_url else {}
    try:
        if engine == "pubmed":
            from deepretrieval.retrieval.pubmed import PubMedClient
            client = PubMedClient(**url, cache=cache)
            res = client.search_full(query, k, min_date=args.min_date, max_date=args.max_date)
            return {"ids": res.ids, "total": res.count, **client.http.stats}
        if engine == "ctgov":
            from deepretrieval.retrieval.ctgov import ClinicalTrialsClient
            params = dict(p.split("=", 1) for p in args.param if "=" in p)
            if len(params) != len(args.param):
                raise ValueError("--param takes NAME=VALUE")
            client = ClinicalTrialsClient(**url, cache=cache)
            res = client.search_full(query, k, max_date=args.max_date, params=params)
            return {"ids": res.ids, "total": res.total, **client.http.stats}
        from deepretrieval.retrieval.medline_backend import MedlineBackend
        from deepretrieval.retrieval.medline_corpus import MedlineFormatError
        try:
            backend = MedlineBackend.from_files(*args.corpus) if args.corpus else MedlineBackend.builtin()
        except (MedlineFormatError, FileNotFoundError) as exc:
            raise SystemExit(f"search: {exc}") from exc
        ids = backend.search(query, k, max_date=args.max_date, min_date=args.min_date)
        return {"ids": ids, "total": len(backend.match(query, args.max_date, args.min_date)),
                "corpus_size": len(backend)}
    except SearchError as exc:
        raise SystemExit(f"search: {engine} failed: {exc}") from exc
    except ValueError as exc:   # a bad date, parameter or page size
        raise SystemExit(f"search: {exc}") from exc


def _index_search(path: str, query: str, args, k: int) -> dict:
    index = open_saved_index(path, args.device, "search")
    hits = index.search(query, k)
    return {"kind": index.kind, "hits": [[d, round(s, 6)] for d, s in hits]}


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if args.index:
        engine = "index"
    else:
        if words[0] not in ENGINES or len(words) < 2:
            raise SystemExit(f"search: give an engine ({', '.join(ENGINES)}) and a query, "
                             f"or --index PATH and a query")
        engine = words.pop(0)
    query = " ".join(words)
    k = args.max if args.max is not None else (10 if args.index else 3000)
    if k < 1:
        raise SystemExit("search: --max must be at least 1")
    start = time.perf_counter()
    result = _index_search(args.index, query, args, k) if args.index else _engine_search(engine, query, args, k)
    record = {"engine": engine, "query": query, **result, "seconds": round(time.perf_counter() - start, 3)}
    if args.json:
        print(json.dumps(record))
        return 0
    if args.index:
        print(f"{len(record['hits'])} hits from {args.index} ({record['kind']}) in {record['seconds']} s")
        for doc_id, score in record["hits"]:
            print(f"{doc_id}\t{score:.4f}")
    else:
        print(f"{len(record['ids'])} of {record['total']} ids from {engine} in {record['seconds']} s")
        print("\n".join(record["ids"]))
    return 0

"""BM25 at scale: build time, peak memory, disk size and queries/s at 100k-5M synthetic passages,
ours vs bm25s in the same run, plus the RSS of our memory-mapped index while it serves queries.

    python -m bench.bm25_scale                                  # 100k and 1M documents
    nice -n 5 python -m bench.bm25_scale --docs 100000 1000000 5000000 --max-gib 12

Corpus (generated here from --seed, so every run and machine indexes the same text): passages
of MS MARCO's shape — lognormal lengths with mean 56 words (sigma 0.45, clipped to 4-400) —
whose words follow a Zipf-Mandelbrot law (p(r) ~ (r + 1)^-1.05) over 2M word types. The 76
most frequent types are English's most frequent words in their order, all 33 Lucene stop words
among them, which makes stop words ~27% of the tokens as in English text; the other types are
pronounceable syllable strings, three forms per stem (bare, -s/-ed/-ing, and a suffix such as
-ation or -ness), so the stop list and the Snowball stemmer do real work. Queries: 1 + Poisson(5)
words (2-20, mean ~6, like MS MARCO's) from the same law. A smaller size's corpus is the start of
a larger one's.

Each measurement runs in a child process: it loads its inputs (texts and doc ids, or tokens),
resets the RSS high-water mark (/proc/self/clear_refs), and reports VmHWM — the peak of the
process, inputs included, the same inputs for both engines. Cases, per size:
  text    texts -> index (each engine's own analysis: lowercase, the same 33 stop words, Snowball
          English), saved to disk; then queries/s at top-10 and top-1000 from query texts (each
          engine analyses them) and from query tokens (the same tokens given to both); ours
          also by its full product alone (no MaxScore pruning: retrieval/bm25_maxscore.py).
  tokens  the same tokens (our analyzer's) given to both: index building alone.
  mmap    ours only: load the saved index memory-mapped, RSS after loading, after 10 queries and
          after all queries (anonymous = private memory; file = mapped index pages, which the
          system can reclaim), beside the size of the rows those queries read. The kernel maps
          whole cached folios around each read, so the file part exceeds the rows read.
bm25s runs with its defaults (method "lucene", k1 0.9, b 0.4, the numpy backend: numba, which its
faster search backend needs, is not a dependency here), one thread.
Times are CPU seconds of the single-threaded child (what a machine shared with other work
disturbs least); queries/s is the median of --repeats passes over all queries after a warm-up.
A size where an engine's peak, extrapolated linearly from the previous size, would pass --max-gib
is skipped for that engine, and the record says so with the extrapolation. Each size appends one
JSON line (ratios ours/bm25s included, and the load average at the start: other work shares the
machine) to bench/results/bm25_scale.jsonl.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")          # 1 thread, before numpy/scipy load BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from bench.results_log import append_result
from deepretrieval.retrieval.analyzer import ENGLISH_STOP_WORDS, Analyzer

# English's most frequent words in order (with all of Lucene's stop words): the head of the law.
HEAD_WORDS = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which "
    "but have an had they you were their one all we can her has there been if more when will would "
    "who so no what its also about these into other than them only out some time two may first then "
    "new such after people over used most make many like").split()
ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fr gr pr tr st sp bl cl fl pl sh ch th".split()
VOWELS = "a e i o u ai ea io ou ee".split()
FORMS = ([""], ["s", "ed", "ing"], ["er", "ly", "ation", "ness", "ment", "ful", "ings", "es", "ity", "ive"])
WORD_TYPES, ZIPF_S, ZIPF_Q = 2_000_000, 1.05, 1.0
STEMMER = "english"                  # Snowball English: what bm25s's examples and bench/bm25.py use
MIB = 2**20


# ---- the synthetic corpus ----------------------------------------------------------------------
def vocabulary(seed: int) -> list[str]:
    """WORD_TYPES words by rank: HEAD_WORDS, then stems of two syllables and more in counting
    order, each in FORMS' three forms (the suffix of each drawn with `seed`)."""
    syllables = [o + v for o in ONSETS for v in VOWELS]
    suffix = np.random.default_rng(seed).integers(0, 1 << 30, size=WORD_TYPES + len(FORMS)).tolist()
    words, stem_no = list(HEAD_WORDS), len(syllables)
    while len(words) < WORD_TYPES:
        parts, r = [], stem_no
        while r:
            r, digit = divmod(r, len(syllables))
            parts.append(syllables[digit])
        stem = "".join(parts)
        for forms in FORMS:
            words.append(stem + forms[suffix[len(words)] % len(forms)])
        stem_no += 1
    return words[:WORD_TYPES]


def zipf_cdf() -> np.ndarray:
    p = (np.arange(1, WORD_TYPES + 1) + ZIPF_Q) ** -ZIPF_S
    cdf = np.cumsum(p)
    return cdf / cdf[-1]                                                         # [WORD_TYPES]


def write_corpus(path: Path, n_docs: int, n_queries: int, seed: int, chunk: int = 100_000) -> dict:
    """Write n_docs passages to path/corpus.txt and n_queries queries to path/queries.txt, one a
    line; the documents of chunk c come from the generator seeded [seed, c * chunk]."""
    words, cdf = vocabulary(seed), zipf_cdf()
    is_stop = np.isin(np.arange(WORD_TYPES), [i for i, w in enumerate(HEAD_WORDS) if w in ENGLISH_STOP_WORDS])
    tokens = stops = 0
    with (path / "corpus.txt").open("w") as f:
        for lo in range(0, n_docs, chunk):
            rng = np.random.default_rng([seed, lo])
            n = min(chunk, n_docs - lo)
            lengths = np.clip(np.rint(rng.lognormal(np.log(56) - 0.45**2 / 2, 0.45, n)), 4, 400).astype(np.int64)
            ranks = np.searchsorted(cdf, rng.random(int(lengths.sum())))      # [words of the chunk]
            tokens, stops = tokens + len(ranks), stops + int(is_stop[ranks].sum())
            ranks, start = ranks.tolist(), 0
            for end in np.cumsum(lengths).tolist():
                text = " ".join([words[i] for i in ranks[start:end]])
                f.write(text[0].upper() + text[1:] + ".\n")                  # a sentence
                start = end
    rng = np.random.default_rng([seed, 1 << 40])
    lengths = np.clip(1 + rng.poisson(5, n_queries), 2, 20)
    ranks, start = np.searchsorted(cdf, rng.random(int(lengths.sum()))).tolist(), 0
    with (path / "queries.txt").open("w") as f:
        for end in np.cumsum(lengths).tolist():
            f.write(" ".join(words[i] for i in ranks[start:end]) + "\n")
            start = end
    return {"docs": n_docs, "words": tokens, "mean_words_per_doc": round(tokens / n_docs, 2),
            "stop_word_fraction": round(stops / tokens, 4), "mean_words_per_query": round(float(lengths.mean()), 2)}


# ---- measuring (in a child process) ------------------------------------------------------------
def memory() -> dict[str, float]:
    """This process's VmHWM, VmRSS, RssAnon and RssFile in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0), so the peak is the measurement's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        raise SystemExit(f"cannot reset the RSS high-water mark ({exc}); this benchmark needs Linux's "
                         "/proc/self/clear_refs") from None


def qps(search, queries: list, repeats: int) -> float:
    """Median queries/s of `repeats` passes of search(queries) after a warm-up on 50 of them."""
    search(queries[:50])
    times = []
    for _ in range(repeats):
        start = time.process_time()
        search(queries)
        times.append(time.process_time() - start)
    return round(len(queries) / statistics.median(times), 1)


def folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB, 1)


class Ours:
    name = "ours"

    def __init__(self):
        from deepretrieval.retrieval.bm25 import BM25Index
        self.cls = BM25Index

    def build_text(self, doc_ids, texts):
        return self.cls.build(doc_ids, texts, Analyzer(stemmer=STEMMER), show_progress=False)

    def build_tokens(self, doc_ids, tokens):
        return self.cls.build_from_tokens(doc_ids, tokens, Analyzer(stemmer=STEMMER).config)

    def save(self, index, path: Path) -> None:
        index.save(path)

    def search_text(self, index, queries, k):
        return [rows for rows, _ in index.search_tokens(index.analyzer.tokenize_batch(queries), k)]

    def search_tokens(self, index, tokens, k):
        return [rows for rows, _ in index.search_tokens(tokens, k)]

    def top(self, index, tokens, k):             # [(rows, scores)] for the cross-check
        return [(r.tolist(), s.tolist()) for r, s in index.search_tokens(tokens, k)]


class Bm25s:
    name = "bm25s"

    def __init__(self):
        import bm25s
        import Stemmer
        self.bm25s, self.stemmer = bm25s, Stemmer.Stemmer(STEMMER)

    def _tokenize(self, texts):
        return self.bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)

    def _index(self, corpus):
        ref = self.bm25s.BM25(method="lucene", k1=0.9, b=0.4)
        ref.index(corpus, show_progress=False)
        return ref

    def build_text(self, doc_ids, texts):
        return self._index(self._tokenize(texts))

    def build_tokens(self, doc_ids, tokens):
        return self._index(tokens)

    def save(self, index, path: Path) -> None:
        index.save(str(path))

    def search_text(self, index, queries, k):
        return index.retrieve(self._tokenize(queries), k=k, show_progress=False, n_threads=1)[0]

    @staticmethod
    def _queries(tokens):
        # bm25s fails on an empty token list (a query of stop words only); a token outside the
        # vocabulary matches nothing, as the empty query does.
        return [t or ["\0"] for t in tokens]

    def search_tokens(self, index, tokens, k):
        return index.retrieve(self._queries(tokens), k=k, show_progress=False, n_threads=1)[0]

    def top(self, index, tokens, k):
        rows, scores = index.retrieve(self._queries(tokens), k=k, show_progress=False, n_threads=1)
        return [(r.tolist(), s.tolist()) for r, s in zip(rows, scores)]


def measure(engine_name: str, case: str, workdir: Path, n_docs: int, repeats: int) -> dict:
    """One case of one engine at n_docs (see the module docstring); runs in its own process."""
    engine = Ours() if engine_name == "ours" else Bm25s()
    with (workdir / "queries.txt").open() as f:
        queries = f.read().splitlines()
    analyzer = Analyzer(stemmer=STEMMER)
    query_tokens = analyzer.tokenize_batch(queries)
    index_path = workdir / f"{engine_name}.index"
    if case == "mmap":
        from deepretrieval.retrieval.bm25 import BM25Index
        out = {"before_load": memory()}
        start = time.perf_counter()
        index = BM25Index.load(index_path, mmap=True)     # verify=True hashes the files: reads, maps nothing
        out["load_wall_s"] = round(time.perf_counter() - start, 2)
        out["after_load"] = memory()
        index.search(queries[:10], 10)
        out["after_10_queries"] = memory()
        out["top10_qps"] = qps(lambda q: index.search(q, 10), queries, repeats)
        out[f"after_{len(queries)}_queries"] = memory()
        m = index.matrix
        out["matrix_mib"] = round((m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / MIB, 1)
        # What the queries' rows hold: the file pages a search can touch, to set beside RssFile.
        for name, some in (("rows_of_10_queries_mib", query_tokens[:10]), ("rows_of_all_queries_mib", query_tokens)):
            rows = np.array(sorted({index.vocab[t] for q in some for t in q if t in index.vocab}), dtype=np.int64)
            postings = int((m.indptr[rows + 1] - m.indptr[rows]).sum())
            out[name] = round(postings * (m.data.itemsize + m.indices.itemsize) / MIB, 1)
        return out
    with (workdir / "corpus.txt").open() as f:
        texts = [line.rstrip("\n") for line in islice(f, n_docs)]
    doc_ids = [f"doc{i}" for i in range(n_docs)]
    inputs = texts if case == "text" else analyzer.tokenize_batch(texts)
    del texts
    analyzer = None                              # its word memo is not the engines' memory
    gc.collect()
    out = {"inputs_mib": memory()["VmRSS"]}
    reset_peak()
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    index = engine.build_text(doc_ids, inputs) if case == "text" else engine.build_tokens(doc_ids, inputs)
    out["build_s"] = round(time.process_time() - start_cpu, 2)
    out["build_wall_s"] = round(time.perf_counter() - start_wall, 2)
    out["peak_mib"] = memory()["VmHWM"]
    out["after_build_mib"] = memory()["VmRSS"]
    if case == "text":
        engine.save(index, index_path)
        out["disk_mib"] = folder_mib(index_path)
        for k in (10, 1000):
            out[f"top{k}_qps_text"] = qps(lambda q: engine.search_text(index, q, k), queries, repeats)
            out[f"top{k}_qps_tokens"] = qps(lambda q: engine.search_tokens(index, q, k), query_tokens, repeats)
        out["cross_check_top11"] = engine.top(index, query_tokens[:100], 11)
        if engine_name == "ours":
            out["terms"], out["nnz"] = index.matrix.shape[0], int(index.matrix.nnz)
            # the same searches by the full product alone, and whether the default pruned them
            out["maxscore_by_default"] = {f"top{k}": index._prunes(k) for k in (10, 1000)}
            index.maxscore = False
            for k in (10, 1000):
                out[f"top{k}_qps_tokens_full_product"] = qps(lambda q: engine.search_tokens(index, q, k),
                                                             query_tokens, repeats)
    return out


def run_child(engine: str, case: str, workdir: Path, n_docs: int, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "bench.bm25_scale", "--child", engine, case, str(workdir),
           str(n_docs), str(repeats)]
    print(f"{n_docs:,} docs: measuring {engine} {case} ...", flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        raise SystemExit(f"{engine} {case} at {n_docs} docs failed (exit {done.returncode}); "
                         f"run `{' '.join(cmd)}` to see why")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the run ----------------------------------------------------------------------------------
def same_top10(ours: list, ref: list) -> bool:
    """The engines' top-10 agree for every cross-check query (each list is a top 11, so that a tie
    across rank 10 shows): scores equal but for float32 rounding, and rows equal except where a
    score ties with a neighbour (equal documents, ordered by each engine its own way)."""
    for (rows, scores), (ref_rows, ref_scores) in zip(ours, ref):
        pad = len(ref_scores) - len(rows)             # bm25s fills up with score-0 rows
        scores, rows = np.array(scores + [0.0] * pad), rows + [-1] * pad
        if not np.allclose(scores, ref_scores, rtol=1e-5):
            return False
        tied = np.isclose(np.asarray(ref_scores)[:, None], np.asarray(ref_scores)[None, :], rtol=1e-6).sum(1) > 1
        if any(r != q and not t and s > 0 for r, q, t, s in zip(rows[:10], ref_rows[:10], tied[:10], scores)):
            return False
    return True


def ratio(a, b, digits: int = 2):
    return round(a / b, digits) if a is not None and b else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-gib", type=float, default=12.0,
                        help="skip an engine at a size whose extrapolated peak memory passes this")
    parser.add_argument("--workdir", default=None, help="folder for the corpus and indexes (default: a temporary one)")
    parser.add_argument("--child", nargs=5, metavar=("ENGINE", "CASE", "WORKDIR", "DOCS", "REPEATS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, case, workdir, n_docs, repeats = args.child
        print(json.dumps(measure(engine, case, Path(workdir), int(n_docs), int(repeats))))
        return 0
    import scipy
    versions = {"numpy": np.__version__, "scipy": scipy.__version__}
    try:
        import bm25s
        engines = ["ours", "bm25s"]
        versions["bm25s"] = bm25s.__version__
    except ImportError as exc:
        engines = ["ours"]
        print(f"note: bm25s reference skipped ({exc})")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at start {load} on {os.cpu_count()} cores (nice {os.nice(0)})")
    sizes = sorted(args.docs)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        corpus = write_corpus(workdir, sizes[-1], args.queries, args.seed)
        print(f"corpus: {sizes[-1]:,} docs, {corpus} ({time.perf_counter() - start:.0f} s)")
        previous: dict[str, tuple[int, float]] = {}       # engine -> (docs, peak MiB) last measured
        rows = []
        for n_docs in sizes:
            record = {"docs": n_docs, "queries": args.queries, "repeats": args.repeats, "threads": 1,
                      "timing": "cpu", "seed": args.seed, "shared_machine": True,
                      "loadavg_start": load, "loadavg_now": [round(x, 2) for x in os.getloadavg()],
                      "nice": os.nice(0), "stemmer": STEMMER, "word_types": WORD_TYPES,
                      "zipf_s": ZIPF_S, "zipf_q": ZIPF_Q, "versions": versions}
            for engine in engines:
                if engine in previous:
                    docs_before, peak_before = previous[engine]
                    predicted = peak_before * n_docs / docs_before
                    if predicted > args.max_gib * 1024:
                        record[engine] = {"skipped": f"extrapolated peak {predicted / 1024:.1f} GiB "
                                                     f"> --max-gib {args.max_gib}",
                                          "predicted_peak_mib": round(predicted)}
                        print(f"{n_docs:,} docs: {engine} skipped: {record[engine]['skipped']}")
                        continue
                result = {case: run_child(engine, case, workdir, n_docs, args.repeats) for case in ("text", "tokens")}
                if engine == "ours":
                    result["mmap"] = run_child(engine, "mmap", workdir, n_docs, args.repeats)
                previous[engine] = (n_docs, max(result["text"]["peak_mib"], result["tokens"]["peak_mib"]))
                record[engine] = result
                print(f"{n_docs:,} docs: {engine}: " + json.dumps(
                    {c: {key: v for key, v in r.items() if key != "cross_check_top11"} for c, r in result.items()}))
            summarise(record, corpus)
            append_result("bm25_scale", record)
            rows.append(record)
    print_table(rows)
    return 0


def summarise(record: dict, corpus: dict) -> None:
    """Add the cross-check and the ratios ours/bm25s to a size's record, and print them."""
    ours, ref = record["ours"], record.get("bm25s", {})
    record["corpus"] = {"generated_docs": corpus["docs"], **{k: v for k, v in corpus.items() if k != "docs"}}
    if "text" in ours:
        o = ours["text"]
        record["corpus"].update(terms=o["terms"], nnz=o["nnz"])
        record["maxscore_speedup"] = {f"top{k}": ratio(o[f"top{k}_qps_tokens"], o[f"top{k}_qps_tokens_full_product"])
                                      for k in (10, 1000)}
        print(f"{record['docs']:,} docs: ours, default search / full product (tokens): "
              f"{record['maxscore_speedup']} (pruned by default: {o['maxscore_by_default']})")
    if "text" in ours and "text" in ref:
        record["top10_agrees_with_bm25s"] = same_top10(ours["text"]["cross_check_top11"],
                                                       ref["text"]["cross_check_top11"])
        o, r = ours, ref
        record["ratios"] = {
            "build_speedup_text": ratio(r["text"]["build_s"], o["text"]["build_s"]),
            "build_speedup_tokens": ratio(r["tokens"]["build_s"], o["tokens"]["build_s"]),
            "peak_ours_over_bm25s_text": ratio(o["text"]["peak_mib"], r["text"]["peak_mib"]),
            "peak_ours_over_bm25s_tokens": ratio(o["tokens"]["peak_mib"], r["tokens"]["peak_mib"]),
            "disk_ours_over_bm25s": ratio(o["text"]["disk_mib"], r["text"]["disk_mib"]),
            **{f"top{k}_qps_{src}_ours_over_bm25s": ratio(o["text"][f"top{k}_qps_{src}"],
                                                          r["text"][f"top{k}_qps_{src}"], 1)
               for k in (10, 1000) for src in ("text", "tokens")}}
        print(f"{record['docs']:,} docs: ratios {record['ratios']}, top-10 agrees with bm25s: "
              f"{record['top10_agrees_with_bm25s']}")
    for result in (ours, ref):
        result.get("text", {}).pop("cross_check_top11", None)


def print_table(records: list[dict]) -> None:
    def pair(o, r, key, fmt):
        a = o.get(key) if o else None
        b = r.get(key) if r else None
        return f"{fmt(a) if a is not None else '-'} / {fmt(b) if b is not None else '-'}"

    print("\n| size | case | build s ours/bm25s | peak MiB ours/bm25s | disk MiB ours/bm25s | "
          "top-10 q/s ours/bm25s | top-1000 q/s ours/bm25s | mmap RSS MiB (anon) |")
    print("|---|---|---|---|---|---|---|---|")
    for rec in records:
        ours, ref = rec["ours"], rec.get("bm25s", {})
        if "text" not in ours:
            print(f"| {rec['docs']:,} | - | ours skipped: {ours['skipped']} |")
            continue
        mm = ours["mmap"]
        after = mm[f"after_{rec['queries']}_queries"]
        mmap_cell = (f"load {mm['after_load']['VmRSS']:.0f}, 10 q {mm['after_10_queries']['VmRSS']:.0f}, "
                     f"{rec['queries']} q {after['VmRSS']:.0f} ({after['RssAnon']:.0f}); matrix {mm['matrix_mib']:.0f}")
        for case in ("text", "tokens"):
            o, r = ours[case], ref.get(case, {})
            print(f"| {rec['docs']:,} | {case} | {pair(o, r, 'build_s', '{:.1f}'.format)} | "
                  f"{pair(o, r, 'peak_mib', '{:.0f}'.format)} | "
                  + (f"{pair(o, r, 'disk_mib', '{:.0f}'.format)} | "
                     f"{pair(o, r, 'top10_qps_text', '{:.0f}'.format)} | "
                     f"{pair(o, r, 'top1000_qps_text', '{:.0f}'.format)} | {mmap_cell} |"
                     if case == "text" else "| | | |"))


if __name__ == "__main__":
    raise SystemExit(main())

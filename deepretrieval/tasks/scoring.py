"""Batched, cached, optionally threaded evaluation of distinct keys — the reward engines' front door.

    scorer = CachedScorer(batch_fn, max_entries=50_000)      # batch_fn(list[key]) -> list[value]
    values = scorer(keys)                                     # duplicates and cache hits cost nothing
    scorer = CachedScorer(threaded(one_fn, workers=8))        # a slow per-key engine (web APIs)

A GRPO batch holds n samples per prompt, and samples of one prompt often repeat the same query;
across steps the same (query, example) pairs come back again. The original scored every sample
serially with no cache (a known bottleneck). Here a batch is de-duplicated, looked up in an LRU
cache, and only the misses go to the engine in one call: a batched engine (BM25 / dense matmul)
scores them together, a per-request engine (PubMed, ClinicalTrials.gov, sqlite) runs them on a
thread pool — those clients are I/O-bound and rate-limit themselves, so threads are the right tool.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor


def threaded(fn: Callable[[Hashable], object], workers: int) -> Callable[[list], list]:
    """Turn a per-key function into a batch function that runs keys on `workers` threads."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def batch(keys: list) -> list:
        if workers == 1 or len(keys) <= 1:
            return [fn(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(workers, len(keys))) as pool:
            return list(pool.map(fn, keys))
    return batch


class CachedScorer:
    """LRU-cached, de-duplicating wrapper around a batch function; safe to share between threads."""

    def __init__(self, batch_fn: Callable[[list], Sequence], max_entries: int = 50_000):
        self.batch_fn = batch_fn
        self.max_entries = max_entries
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __call__(self, keys: Sequence[Hashable]) -> list:
        out: dict = {}
        with self._lock:
            for k in keys:
                if k in self._cache and k not in out:
                    self._cache.move_to_end(k)
                    out[k] = self._cache[k]
                    self.hits += 1
        todo = list(dict.fromkeys(k for k in keys if k not in out))
        if todo:
            values = list(self.batch_fn(todo))
            if len(values) != len(todo):
                raise RuntimeError(f"batch function returned {len(values)} values for {len(todo)} keys")
            with self._lock:
                self.misses += len(todo)
                for k, v in zip(todo, values):
                    out[k] = v
                    self._cache[k] = v
                    self._cache.move_to_end(k)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return [out[k] for k in keys]

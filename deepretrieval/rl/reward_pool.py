"""Rewards computed off the generation path: a worker pool (threads or processes) plus a cache.

    pool = RewardPool(task.reward, workers=4, kind="thread")
    pending = pool.submit(prompts, completions)   # returns at once; workers start scoring
    ...                                            # generate the next chunk meanwhile
    result = pending.result()                      # RewardResult, in submission order
    pool.close()

The rollout submits each generated chunk as soon as it exists, so scoring overlaps the generation
of the next chunk; only what is left when generation ends shows up as reward time. A batch is
split over the workers; (prompt, completion) pairs seen before come from an LRU cache (GRPO groups
repeat completions, and later steps revisit prompts) and are never scored twice.
Threads suit I/O-bound rewards (web engines, sqlite with the GIL released); processes suit
CPU-bound pure-Python rewards (the reward function and the prompts must then be picklable).
"""
from __future__ import annotations

import json
import multiprocessing
import threading
from collections import OrderedDict
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable

from deepretrieval.rl.interfaces import Prompt, RewardResult, as_reward_result

RewardFn = Callable[..., Any]


def call_reward(fn: RewardFn, prompts: list[Prompt], completions: list[str]) -> RewardResult:
    """Call a task's reward with the meta keys spread as aligned lists (module-level so that a
    process pool can pickle it)."""
    keys = sorted({k for p in prompts for k in p.meta})
    meta = {k: [p.meta.get(k) for p in prompts] for k in keys}
    return as_reward_result(fn(prompts, completions, **meta), len(completions))


def _prompt_key(p: Prompt) -> str:
    return json.dumps([p.messages, p.assistant_prefix, p.text, p.meta], sort_keys=True, default=str)


class PendingRewards:
    """Rewards of one submitted batch: cache hits, futures of the misses, and in-batch duplicates
    (index i takes its value from index source[i])."""

    def __init__(self, pool: "RewardPool", keys: list[tuple[str, str]], source: list[int],
                 hits: dict[int, tuple[float, dict]], futures: list[tuple[list[int], Future]]):
        self._pool, self._keys, self._source, self._hits, self._futures = pool, keys, source, hits, futures

    def result(self) -> RewardResult:
        values = dict(self._hits)
        for idx, fut in self._futures:
            out = fut.result()
            details = out.details or [{} for _ in out.rewards]
            for i, r, d in zip(idx, out.rewards, details):
                values[i] = (float(r), d)
                self._pool._remember(self._keys[i], values[i])
        scored = [values[j] for j in self._source]
        return RewardResult([r for r, _ in scored], [d for _, d in scored])


class RewardPool:
    def __init__(self, reward_fn: RewardFn, workers: int = 4, kind: str = "thread",
                 cache_size: int = 100_000):
        if workers < 1:
            raise ValueError(f"reward workers must be >= 1, got {workers}")
        self.reward_fn = reward_fn
        self.workers = workers
        if kind == "thread":
            self._executor: Executor = ThreadPoolExecutor(max_workers=workers)
        elif kind == "process":
            # spawn, not fork: the trainer process holds threads (torch, tqdm, this pool) and a
            # forked child could inherit a held lock
            self._executor = ProcessPoolExecutor(max_workers=workers,
                                                 mp_context=multiprocessing.get_context("spawn"))
        else:
            raise ValueError(f"reward pool kind must be 'thread' or 'process', got {kind!r}")
        self._cache: OrderedDict[tuple[str, str], tuple[float, dict]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _remember(self, key: tuple[str, str], value: tuple[float, dict]) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def submit(self, prompts: list[Prompt], completions: list[str]) -> PendingRewards:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        keys = [(_prompt_key(p), c) for p, c in zip(prompts, completions)]
        hits: dict[int, tuple[float, dict]] = {}
        first_of: dict[tuple[str, str], int] = {}     # duplicates inside the batch score once
        source: list[int] = []
        misses: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                if key in first_of:
                    source.append(first_of[key])
                    continue
                first_of[key] = i
                source.append(i)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    hits[i] = self._cache[key]
                else:
                    misses.append(i)
        self.hits += len(keys) - len(misses)
        self.misses += len(misses)
        per = max(1, -(-len(misses) // self.workers))
        futures = []
        for start in range(0, len(misses), per):
            idx = misses[start:start + per]
            futures.append((idx, self._executor.submit(
                call_reward, self.reward_fn, [prompts[i] for i in idx], [completions[i] for i in idx])))
        return PendingRewards(self, keys, source, hits, futures)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

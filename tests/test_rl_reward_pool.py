"""rl.reward_pool: parallel, cached, order-preserving; overlaps the caller's work."""
import threading
import time

import pytest

from deepretrieval.rl.interfaces import Prompt, RewardResult
from deepretrieval.rl.reward_pool import RewardPool


class CountingReward:
    def __init__(self, delay=0.0):
        self.calls = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, prompts, completions, **meta):
        with self.lock:
            self.calls.append(list(completions))
        time.sleep(self.delay)
        return RewardResult([len(c) + meta["bonus"][i] for i, c in enumerate(completions)],
                            [{"chars": len(c), "tag": "x"} for c in completions])


def length_reward(prompts, completions, **meta):       # module level: picklable for processes
    return [float(len(c)) * meta["scale"][i] for i, c in enumerate(completions)]


def test_thread_pool_orders_caches_and_dedups():
    fn = CountingReward()
    pool = RewardPool(fn, workers=3, kind="thread")
    prompts = [Prompt(text=f"p{i % 2}", meta={"bonus": i % 2}) for i in range(6)]
    comps = ["a", "bb", "a", "bb", "ccc", "dddd"]
    out = pool.submit(prompts, comps).result()
    assert out.rewards == [1, 3, 1, 3, 3, 5]
    assert out.details[4] == {"chars": 3, "tag": "x"}
    assert sum(len(c) for c in fn.calls) == 4                # (p0,a) and (p1,bb) repeat in-batch
    again = pool.submit(prompts[:2], comps[:2]).result()     # cache hits: no new calls
    assert again.rewards == [1, 3] and sum(len(c) for c in fn.calls) == 4
    assert pool.hits == 4 and pool.misses == 4
    pool.close()


def test_submit_returns_before_scoring_finishes():
    pool = RewardPool(CountingReward(delay=1.5), workers=2)
    t0 = time.perf_counter()
    pending = pool.submit([Prompt(text="p", meta={"bonus": 0})] * 2, ["x", "yy"])
    assert time.perf_counter() - t0 < 1.0                    # the caller keeps generating
    assert pending.result().rewards == [1, 2]
    assert time.perf_counter() - t0 >= 1.5
    pool.close()


def test_process_pool_and_bad_reward_length():
    pool = RewardPool(length_reward, workers=2, kind="process")
    out = pool.submit([Prompt(text="q", meta={"scale": 2.0})] * 3, ["a", "bb", "ccc"]).result()
    assert out.rewards == [2.0, 4.0, 6.0]
    pool.close()
    bad = RewardPool(lambda p, c, **m: [0.0], workers=1)
    with pytest.raises(ValueError, match="returned 1 rewards for 2 completions"):
        bad.submit([Prompt(text="q")] * 2, ["a", "b"]).result()
    bad.close()

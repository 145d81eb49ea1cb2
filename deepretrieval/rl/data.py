"""The prompt stream: a seeded shuffle of the task's prompts, epoch after epoch, with a cursor.

    stream = PromptStream(num_prompts=len(prompts), seed=0)
    idx = stream.next(64)                  # 64 prompt indices (crosses epoch boundaries)
    state = stream.state_dict()            # {"epoch": e, "position": p} -- the data cursor
    stream.load_state_dict(state)          # resume exactly where a checkpoint left off

Epoch e's order is randperm(num_prompts) under a generator seeded with (seed, e), so the cursor
(two integers) is the whole state; every rank computes the same global batch.
"""
from __future__ import annotations

import torch


class PromptStream:
    def __init__(self, num_prompts: int, seed: int):
        if num_prompts < 1:
            raise ValueError("the task supplied no prompts")
        self.num_prompts = num_prompts
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_prompts, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.position == self.num_prompts:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.num_prompts - self.position)
            out.extend(self._order[self.position:self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_prompts": self.num_prompts}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise ValueError(f"checkpoint was written for {state['num_prompts']} prompts, the task "
                             f"now has {self.num_prompts}: resume with the same data")
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)

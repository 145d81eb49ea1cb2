"""The contract between rl/ and a task: prompts in, rewards out. rl/ knows nothing else about tasks;
tasks/ builds these types (tasks.task.Task satisfies `Task` as it is).

    class MyTask:                                   # satisfies rl.interfaces.Task
        def prompts(self) -> Sequence[Prompt]: ...
        def reward(self, prompts, completions, **meta) -> RewardResult | list[float]: ...
    rewards, details = task.reward(prompts, completions)    # a RewardResult unpacks as its fields

A `Prompt` is either chat `messages` (rendered by rl with the model's chat template, the assistant
turn opened and `assistant_prefix` appended, e.g. "<think>\\n") or a ready `text`. `meta` carries
whatever the reward needs (gold ids, a database path, ...); it must be JSON-able plain data
(it goes to rollouts.jsonl, the reward cache key, and to worker processes).

`reward` receives the prompts, the completions (decoded text of the generated tokens only, special
tokens removed), and each meta key as a list aligned with them: for prompts p_0..p_k with meta
{"gold": g_i}, it is called as reward(prompts, completions, gold=[g_0, ..., g_k]). It returns one
float per completion, or a `RewardResult` that adds per-sample details (a dict of numbers and
strings per sample; numeric entries are averaged into metrics as reward/<key>).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict[str, str], ...] | None = None   # [{"role": ..., "content": ...}, ...]
    assistant_prefix: str = ""                          # pre-fill of the assistant turn
    text: str | None = None                             # alternative: the exact prompt text
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if (self.messages is None) == (self.text is None):
            raise ValueError("a Prompt needs exactly one of `messages` or `text`")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))


@dataclass(frozen=True)
class RewardResult:
    rewards: list[float]
    details: list[dict[str, Any]] | None = None

    def __post_init__(self):
        if self.details is not None and len(self.details) != len(self.rewards):
            raise ValueError(f"{len(self.details)} details for {len(self.rewards)} rewards")

    def __iter__(self):
        """`rewards, details = result`, as callers that evaluate rather than train write it."""
        return iter((self.rewards, self.details))


@runtime_checkable
class Task(Protocol):
    def prompts(self) -> Sequence[Prompt]:
        """The training prompts (the trainer shuffles and cycles through them)."""

    def reward(self, prompts: list[Prompt], completions: list[str], **meta: list[Any]
               ) -> RewardResult | list[float]:
        """One reward per completion (see the module docstring for the calling convention)."""


class TokenizerLike(Protocol):
    """What rl needs from model.tokenizer.Tokenizer."""
    pad_token_id: int | None
    stop_token_ids: list[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


def as_reward_result(out: RewardResult | Sequence[float], n: int) -> RewardResult:
    """Normalise what a task's reward returned, checking it has one reward per completion."""
    result = out if isinstance(out, RewardResult) else RewardResult([float(r) for r in out])
    if len(result.rewards) != n:
        raise ValueError(f"task reward returned {len(result.rewards)} rewards for {n} completions")
    return result

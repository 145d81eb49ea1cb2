"""What every task family offers the trainer and the evaluator, and the reward loop they share.

    task = build_task(cfg)                         # tasks.registry
    batch = task.prompts("train")                  # [TaskPrompt(messages, assistant_prefix, meta={"split", "id"})]
    rewards, details = task.reward(batch, completions)   # floats, per-sample dicts for rollout logs
    rl.interfaces.RewardResult(*task.reward(batch, completions))   # what the trainer takes
    task.evaluate(task.raw_queries("test"), "test")      # {"ndcg@10": ...}: the raw query
    task.evaluate(task.answers(batch, completions), "test")  # the model's rewrites

`reward` never raises on model output: each completion (appended to the prompt's pre-filled
assistant prefix) is parsed by tasks/answer_parsing.py, the parsed answers that qualify are sent
to the engine in one batch through a `CachedScorer` (de-duplicated, cached, threaded where the
engine is per-request), and the family's `combine` turns (parse, metric) into the paper's reward.
A metric dict with an "error" key means the engine failed on that answer (bad Boolean query,
sqlite error, HTTP failure after retries); the family applies the paper's penalty and the error
text travels in the details, so nothing is dropped silently.
"""
from __future__ import annotations

from collections.abc import Sequence

from .answer_parsing import ParsedAnswer, parse_answer
from .prompts import TEMPLATES, TaskPrompt, build_prompt

SPLITS = ("train", "val", "test")


class Task:
    """Base class: subclasses set `name`, fill `self.examples`, implement `metrics`, `combine`, `evaluate`."""

    name = "task"
    template = "scifact"

    def __init__(self, examples: dict[str, list[dict]]):
        # examples[split] = [{"id": str, "input": str, "prompt_kwargs": {...}, ...family fields}]
        self.examples = examples

    @property
    def answer_key(self) -> str:
        """"query" or "sql": the JSON key the answer must hold (from the prompt template)."""
        return TEMPLATES[self.template].answer_key

    # ---- data --------------------------------------------------------------------------
    def split_examples(self, split: str) -> list[dict]:
        if split not in self.examples or not self.examples[split]:
            have = sorted(s for s, v in self.examples.items() if v)
            raise ValueError(f"task {self.name!r} has no {split!r} split (it has {have})")
        return self.examples[split]

    def prompts(self, split: str = "train") -> list[TaskPrompt]:
        return [build_prompt(self.template, ex["input"], meta={"split": split, "id": ex["id"]},
                             **ex.get("prompt_kwargs", {}))
                for ex in self.split_examples(split)]

    def raw_queries(self, split: str) -> list[str]:
        """The user's own text per example (the 'raw query' baseline of eval)."""
        return [ex["input"] for ex in self.split_examples(split)]

    def answers(self, prompts: Sequence[TaskPrompt], completions: Sequence[str]) -> list[str | None]:
        """The parsed query / SQL per completion (None where it does not parse), for `evaluate`."""
        return [self._parse(p, c).value for p, c in zip(prompts, completions)]

    def limit(self, n: int, splits: Sequence[str] | None = None) -> None:
        """Keep the first `n` examples of every split, or of `splits` only (smoke runs, the demo)."""
        self.examples = {s: exs[:n] if splits is None or s in splits else exs
                         for s, exs in self.examples.items()}
        self.__dict__.pop("_by_id", None)

    @property
    def _index(self) -> dict[str, dict[str, dict]]:
        if not hasattr(self, "_by_id"):
            self._by_id = {s: {ex["id"]: ex for ex in exs} for s, exs in self.examples.items()}
        return self._by_id

    # ---- reward ------------------------------------------------------------------------
    def _parse(self, prompt, completion) -> ParsedAnswer:
        text = prompt.assistant_prefix + completion if isinstance(completion, str) else completion
        return parse_answer(text, self.answer_key)

    def reward(self, prompts: Sequence[TaskPrompt], completions: Sequence[str], **_
               ) -> tuple[list[float], list[dict]]:
        """Rewards and details; `prompts` are this task's (or rl's Prompt copies: same fields)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        parsed = [self._parse(p, c) for p, c in zip(prompts, completions)]
        todo = [i for i, pa in enumerate(parsed) if pa.ok]      # the paper scores well-formed answers only
        metrics: list[dict | None] = [None] * len(parsed)
        for i, m in zip(todo, self.metrics([parsed[i].value for i in todo],
                                           [prompts[i].meta for i in todo])):
            metrics[i] = m
        rewards, details = [], []
        for pa, m in zip(parsed, metrics):
            r = float(self.combine(pa, m))
            d = {"reward": r, "format_ok": pa.format_ok, "answer_ok": pa.value is not None,
                 "reason": pa.reason, "answer": pa.value}
            d.update(m or {})
            rewards.append(r)
            details.append(d)
        return rewards, details

    def metrics(self, values: list[str], metas: list[dict]) -> list[dict]:
        """Engine metric per scored answer, e.g. {"recall": 0.4}, or {"error": "..."}: through the
        subclass's cached scorer (`self._scorer`), keyed by (answer, split, example id)."""
        return self._scorer([(v, m["split"], m["id"]) for v, m in zip(values, metas)])

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        """The paper's reward from the parse and the engine metric (None when not scored)."""
        raise NotImplementedError

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        """The task's evaluation metrics of one query per example of `split` (None = no answer)."""
        raise NotImplementedError

    def _check_aligned(self, queries: Sequence, split: str) -> list[dict]:
        exs = self.split_examples(split)
        if len(queries) != len(exs):
            raise ValueError(f"{len(queries)} queries for {len(exs)} examples of split {split!r}")
        return exs

"""What every task family offers the trainer and the evaluator, and the reward loop they share.

    task = build_task(cfg)                         # tasks.registry
    batch = task.prompts("train")                  # [rl Prompt(messages, assistant_prefix, meta={"split", "id"})]
    rewards, details = task.reward(batch, completions)   # a RewardResult: floats, per-sample dicts
    rl.trainer.train(cfg.rl, model, tokenizer, task, run_dir)   # a Task is an rl.interfaces.Task
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

import hashlib
import json
from collections.abc import Sequence

from deepretrieval.rl.interfaces import Prompt, RewardResult

from .answer_parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, ParsedAnswer, parse_answer
from .prompts import TEMPLATES, build_prompt

SPLITS = ("train", "val", "test")


class Task:
    """Base class: subclasses set `name`, fill `self.examples`, implement `metrics`, `combine`, `evaluate`."""

    name = "task"
    template = "scifact"
    prompt_frame = "chat"       # "chat" turns or the reference's "raw" prompt string (tasks/prompts.py)
    reasoning = True            # think, then answer; False: the answer alone (tasks/prompts.py)
    headline = ""               # the evaluation metric that `evaluate`'s "per_example" list holds
    missing_splits: dict[str, str] = {}   # split -> why it has no examples (its absent file), set by loaders

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
            why = f": {self.missing_splits[split]}" if split in self.missing_splits else ""
            raise ValueError(f"task {self.name!r} has no {split!r} split (it has {have}){why}")
        return self.examples[split]

    def prompts(self, split: str = "train") -> list[Prompt]:
        """The split's prompts; the default split is what the trainer draws from."""
        return [build_prompt(self.template, ex["input"], meta={"split": split, "id": ex["id"]},
                             frame=self.prompt_frame, reasoning=self.reasoning, **ex.get("prompt_kwargs", {}))
                for ex in self.split_examples(split)]

    def raw_queries(self, split: str) -> list[str]:
        """The user's own text per example (the 'raw query' baseline of eval)."""
        return [ex["input"] for ex in self.split_examples(split)]

    def engine_query(self, answer: str, example: dict) -> str:
        """What the engine is sent for a parsed answer of `example` (the answer itself, unless a
        family builds the query from more, e.g. classic IR's expansion mode)."""
        return answer

    def answers(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[str | None]:
        """The engine query per completion (None where it does not parse), for `evaluate`."""
        out = []
        for p, c in zip(prompts, completions):
            value = self._parse(p, c).value
            out.append(None if value is None else
                       self.engine_query(value, self._index[p.meta["split"]][p.meta["id"]]))
        return out

    def well_formed(self, prompt: Prompt, answer: str) -> str:
        """A completion (after the prompt's pre-fill) that answers `answer` in the expected format."""
        block = ANSWER_OPEN + json.dumps({self.answer_key: answer}) + ANSWER_CLOSE
        full = ("" if not self.reasoning else prompt.assistant_prefix + THINK_CLOSE + "\n") + block
        if not full.startswith(prompt.assistant_prefix):
            raise ValueError(f"the pre-fill {prompt.assistant_prefix!r} does not start {full!r}")
        return full[len(prompt.assistant_prefix):]

    def hold_out_validation(self, fraction: float) -> None:
        """Move a fixed `fraction` of the training examples to "val" (when the data has no val split of
        its own): an example goes by a hash of its `group` (e.g. its database: whole groups move
        together) or else its id, so the split never depends on order or seed."""
        if self.examples.get("val"):
            raise ValueError(f"task {self.name!r} already has a val split; task.val_fraction must be 0")
        train = self.split_examples("train")
        held = [_unit_hash(ex.get("group", ex["id"])) < fraction for ex in train]
        if not any(held) or all(held):
            raise ValueError(f"task.val_fraction = {fraction} leaves no train or no val examples")
        self.examples = {**self.examples, "val": [ex for ex, h in zip(train, held) if h],
                         "train": [ex for ex, h in zip(train, held) if not h]}
        self.__dict__.pop("_by_id", None)

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
        return parse_answer(text, self.answer_key, self.reasoning)

    def reward(self, prompts: Sequence[Prompt], completions: Sequence[str], **_) -> RewardResult:
        """Rewards and per-sample details of this task's prompts; the trainer's meta lists (the
        prompts' own meta, spread) are not needed: each prompt carries its meta."""
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
        return RewardResult(rewards, details)

    def metrics(self, values: list[str], metas: list[dict]) -> list[dict]:
        """Engine metric per scored answer, e.g. {"recall": 0.4}, or {"error": "..."}: through the
        subclass's cached scorer (`self._scorer`), keyed by (answer, split, example id)."""
        return self._scorer([(self.engine_query(v, self._index[m["split"]][m["id"]]), m["split"], m["id"])
                             for v, m in zip(values, metas)])

    def combine(self, parsed: ParsedAnswer, metric: dict | None) -> float:
        """The paper's reward from the parse and the engine metric (None when not scored)."""
        raise NotImplementedError

    def evaluate(self, queries: Sequence[str | None], split: str) -> dict[str, float]:
        """The task's evaluation metrics of one query per example of `split` (None = no answer)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the task holds (text-to-SQL: its database connections); nothing here."""

    def _check_aligned(self, queries: Sequence, split: str) -> list[dict]:
        exs = self.split_examples(split)
        if len(queries) != len(exs):
            raise ValueError(f"{len(queries)} queries for {len(exs)} examples of split {split!r}")
        return exs


def _unit_hash(example_id: str) -> float:
    """A number in [0, 1) fixed by the id (the first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(str(example_id).encode()).digest()[:8], "big") / 2.0 ** 64

"""A task's metric on one split for the raw query and for a model's rewrites: what `eval`, `train`,
`demo` and the SciFact benchmark report.

    from deepretrieval.evaluation import RewriteSettings, evaluate_variants, rewrite
    rows = evaluate_variants(task, "test", model, tok, RewriteSettings(max_new_tokens=512))
    # [{"variant": "raw", "ndcg@10": 0.67, ...}, {"variant": "rewrite", ...}, {"variant": "rewrite_or_raw", ...}]

Variants, one row each:
  raw             the user's own text sent to the engine (query tasks only: for text-to-SQL the
                  question is not SQL). `mean_reward` is the reward the task would give the raw
                  text written as a well-formed answer: the level RL has to beat.
  rewrite         the model's answer: the query / SQL in its last <answer> block (None, i.e. no
                  hits, when there is none). `valid_format` is the share of completions that pass
                  the strict format check and parse; `mean_reward` is the task's training reward.
  rewrite_or_raw  (query tasks) the rewrite where one parsed, else the raw query: a separate,
                  labelled fallback, never mixed into `rewrite`.
Each row also holds `per_example`: the task's headline metric (`task.headline`, e.g. ndcg@10) of
every example in order, which paired bootstrap intervals between variants are computed from.
Rewrites are greedy by default (RunSection.eval_greedy), generated in batches with a progress bar
per decode step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tqdm import tqdm

from deepretrieval.model.sampler import SamplingParams, generate
from deepretrieval.rl.rollout import render_prompt


@dataclass(frozen=True)
class RewriteSettings:
    max_new_tokens: int = 512
    greedy: bool = True
    temperature: float = 1.0          # when not greedy
    batch_size: int = 16
    max_prompt_tokens: int = 1024     # a longer prompt is an error, never silently cut
    seed: int = 0


def encode_prompts(prompts: Sequence, tokenizer, max_prompt_tokens: int) -> list[list[int]]:
    """Token ids of each rendered prompt; a prompt over the limit is an error naming it."""
    ids = [tokenizer.encode(render_prompt(p, tokenizer.chat_template)) for p in prompts]
    for p, x in zip(prompts, ids):
        if len(x) > max_prompt_tokens:
            raise SystemExit(f"prompt {p.meta.get('id', '?')!r} has {len(x)} tokens, more than "
                             f"model.max_prompt_tokens = {max_prompt_tokens}; raise that setting")
    return ids


def rewrite(model, tokenizer, prompts: Sequence, settings: RewriteSettings, desc: str = "rewrite"
            ) -> list[str]:
    """The model's completion (decoded, special tokens removed) for each prompt.

    The progress bar counts decode steps, `max_new_tokens` per batch (a batch whose completions
    all stop early jumps to its end), so a long batch on CPU is seen to move; its postfix gives
    the prompts done and the tokens generated. A batch's seed is `seed` + its first prompt's index."""
    ids = encode_prompts(prompts, tokenizer, settings.max_prompt_tokens)
    params = SamplingParams(max_new_tokens=settings.max_new_tokens,
                            temperature=0.0 if settings.greedy else settings.temperature,
                            stop_token_ids=tuple(tokenizer.stop_token_ids))
    out: list[str] = []
    bs, steps = settings.batch_size, settings.max_new_tokens
    starts = range(0, len(ids), bs)
    tokens = 0
    with tqdm(total=len(starts) * steps, desc=desc, unit="step", dynamic_ncols=True) as bar:
        for i, start in enumerate(starts):
            gen = generate(model, ids[start:start + bs], params, pad_token_id=tokenizer.pad_token_id,
                           seed=settings.seed + start, on_step=lambda: bar.update(1))
            bar.update((i + 1) * steps - bar.n)
            out.extend(tokenizer.decode(toks, skip_special_tokens=True) for toks in gen.token_lists())
            tokens += int(gen.lengths.sum())
            bar.set_postfix(prompts=f"{len(out)}/{len(ids)}", tokens=tokens)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate_variants(task, split: str, model=None, tokenizer=None,
                      settings: RewriteSettings = RewriteSettings(), desc: str = "rewrite"
                      ) -> list[dict]:
    """One row per variant (see the module docstring); the model's variants only with a model."""
    rows = []
    query_task = task.answer_key == "query"
    raw = task.raw_queries(split) if query_task else []
    if query_task:
        prompts = task.prompts(split)
        rewards, _ = task.reward(prompts, [task.well_formed(p, q) for p, q in zip(prompts, raw)])
        rows.append({"variant": "raw", **task.evaluate(raw, split), "valid_format": None,
                     "mean_reward": _mean(rewards)})
    if model is None:
        return rows
    prompts = task.prompts(split)
    completions = rewrite(model, tokenizer, prompts, settings, desc)
    rewards, details = task.reward(prompts, completions)
    answers = task.answers(prompts, completions)
    valid = _mean([float(d["format_ok"] and d["answer_ok"]) for d in details])
    rows.append({"variant": "rewrite", **task.evaluate(answers, split), "valid_format": valid,
                 "mean_reward": _mean(rewards),
                 "examples": [{"id": p.meta.get("id"), "completion": c, "answer": a}
                              for p, c, a in list(zip(prompts, completions, answers))[:3]]})
    if query_task:
        fallback = [a if a else q for a, q in zip(answers, raw)]
        rows.append({"variant": "rewrite_or_raw", **task.evaluate(fallback, split),
                     "valid_format": valid, "mean_reward": None,
                     "fallbacks": float(sum(not a for a in answers))})
    return rows

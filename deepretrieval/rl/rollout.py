"""Rollouts: sample completions with the project's sampler, hand them to the reward pool, and
collate them into padded training batches.

    samples, pending, gen_time = generate_rollouts(lm, work, group_size, sampling, chunk_prompts,
                                                   pad_token_id, stop_ids, seed, step, decode, pool)
    batch = collate(samples, ("old_logprobs", "advantages"), device)

`work` is this rank's share of the step's prompts, as (position in the global batch, prompt
index, prompt token ids, Prompt). They are generated `chunk_prompts` prompts at a time (each
repeated `group_size` times, so a GRPO group is always generated, scored and normalised on one
rank). A chunk's sampling seed is derived from (seed, step, position of its first prompt): the
rollouts are a function of the policy and those numbers only, not of the rank count or of any
RNG state, which makes 1-vs-N-process runs and resumed runs reproduce each other exactly.
Each chunk goes to the reward pool as soon as it is decoded, so scoring overlaps generation.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from deepretrieval.model.sampler import SamplingParams, generate
from deepretrieval.rl.config import SamplingConfig
from deepretrieval.rl.interfaces import Prompt
from deepretrieval.rl.reward_pool import PendingRewards, RewardPool

@dataclass
class Sample:
    """One completion. Per-token tensors are [R] over the response tokens (stop token included)."""
    position: int                 # index of its prompt in the step's global batch
    prompt_index: int             # index into the task's prompts
    prompt: Prompt
    prompt_ids: list[int]
    response_ids: list[int]
    finish_reason: str            # "stop" | "length"
    completion: str               # decoded response, special tokens removed
    sampler_logprobs: torch.Tensor
    reward: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None


def chunk_seed(seed: int, step: int, position: int) -> int:
    return ((seed * 1_000_003 + step) * 1_000_003 + position) % (2 ** 63)


@torch.no_grad()
def generate_rollouts(lm: torch.nn.Module, work: list[tuple[int, int, list[int], Prompt]],
                      group_size: int, sampling: SamplingConfig, chunk_prompts: int | None,
                      pad_token_id: int, stop_token_ids: list[int], seed: int, step: int,
                      decode: Callable[[list[int]], str], pool: RewardPool | None
                      ) -> tuple[list[Sample], list[tuple[list[Sample], PendingRewards]], float]:
    """Returns the samples (prompt-major, groups contiguous), the pending rewards per chunk, and
    the seconds spent generating."""
    params = SamplingParams(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                            top_k=sampling.top_k, top_p=sampling.top_p,
                            stop_token_ids=tuple(stop_token_ids))
    chunk = chunk_prompts or len(work)
    samples: list[Sample] = []
    pending: list[tuple[list[Sample], PendingRewards]] = []
    gen_time = 0.0
    for start in range(0, len(work), chunk):
        part = work[start:start + chunk]
        t0 = time.perf_counter()
        out = generate(lm, [ids for _, _, ids, _ in part for _ in range(group_size)], params,
                       pad_token_id=pad_token_id, seed=chunk_seed(seed, step, part[0][0]))
        tokens, lengths = out.tokens.cpu(), out.lengths.tolist()
        logprobs = out.logprobs.float().cpu()
        gen_time += time.perf_counter() - t0
        new = []
        for row, (pos, pidx, ids, prompt) in enumerate(p for p in part for _ in range(group_size)):
            n = lengths[row]
            response = tokens[row, :n].tolist()
            new.append(Sample(pos, pidx, prompt, ids, response, out.finish_reasons[row],
                              decode(response), logprobs[row, :n].clone()))
        samples.extend(new)
        if pool is not None:
            pending.append((new, pool.submit([s.prompt for s in new], [s.completion for s in new])))
    return samples, pending, gen_time


@dataclass
class Batch:
    input_ids: torch.Tensor        # [m, T] prompt | response | padding: every row starts at column 0
    response_start: torch.Tensor   # [m] long: the column of each row's first response token
    response_mask: torch.Tensor    # [m, R] float, 1 on response tokens
    fields: dict[str, torch.Tensor]  # each [m, R] (0 on padding)


def collate(samples: list[Sample], fields: tuple[str, ...], pad_token_id: int,
            device: torch.device) -> Batch:
    """Rows packed to the left, padding only at the end: under causal attention a real token never
    sees a pad, so the trainer's forward needs no attention mask (flash attention) and positions are
    0, 1, 2, ... as in the sampler's prefill of an unpadded prompt. Response-aligned tensors [m, R]
    (logprobs, advantages, ...) start at each row's `response_start`. Any rows with `prompt_ids`,
    `response_ids` and the named fields will do (SFT's traces, rl/sft.py)."""
    m = len(samples)
    T = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    R = max(len(s.response_ids) for s in samples)
    ids = torch.full((m, T), pad_token_id, dtype=torch.long)
    start = torch.tensor([len(s.prompt_ids) for s in samples], dtype=torch.long)
    resp = torch.zeros((m, R), dtype=torch.float32)
    out = {f: torch.zeros((m, R), dtype=torch.float32) for f in fields}
    for i, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        ids[i, :p + r] = torch.tensor(s.prompt_ids + s.response_ids)
        resp[i, :r] = 1
        for f in fields:
            out[f][i, :r] = getattr(s, f)
    move = functools.partial(to_device, device=device)
    return Batch(move(ids), move(start), move(resp), {f: move(t) for f, t in out.items()})


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t on `device`; to a GPU through pinned memory without waiting: a plain copy from pageable
    memory makes the host wait for every queued kernel, which left the GPU idle between the
    trainer's micro-batches while the host collated the next one."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def render_prompt(prompt: Prompt, chat_template: str | None) -> str:
    """The exact prompt text: `text` as given, or `messages` through the model's chat template
    with the assistant turn opened and pre-filled with `assistant_prefix`."""
    if prompt.text is not None:
        return prompt.text
    from deepretrieval.model.chat_template import render_chat
    if chat_template is None:
        raise ValueError("the task gave chat messages but the tokenizer has no chat template; "
                         "give Prompt(text=...) or use a tokenizer with a chat template")
    return render_chat(list(prompt.messages), chat_template, assistant_prefix=prompt.assistant_prefix)

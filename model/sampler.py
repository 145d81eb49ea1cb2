"""Batched generation with a static KV cache: greedy, temperature, top-k, top-p, stop tokens.

    from model.sampler import SamplingParams, generate
    out = generate(model, [prompt_ids_1, prompt_ids_2], SamplingParams(max_new_tokens=64,
                   temperature=0.7, top_p=0.9, stop_token_ids=(tok.eos_token_id,)), pad_token_id=0, seed=0)
    out.token_lists(), out.logprob_lists(), out.finish_reasons

Prompts of different lengths are left-padded into one [B, P] batch; the cache is sized to
P + max_new_tokens. Each step feeds one token per row; rows that have stopped keep running
(static shapes) but their tokens are masked out and reported as padding.

Log-probabilities (what the RL trainer must reproduce): for every chosen token,
`log_softmax(logits / temperature)[token]` in float32 over the *full* vocabulary, i.e. the
temperature-scaled distribution before any top-k/top-p truncation (verl's convention). Greedy
(temperature 0) reports `log_softmax(logits)`. `token_logprobs(logits, tokens, temperature)` is
that function: the trainer applies it to a full forward's logits and gets the same numbers
(fp32: ~1e-6 apart, tested at 1e-4; bf16 KV-cache decode vs a full forward differs by bf16 rounding).

A stop token is kept in the output (it is part of what the policy chose) with its log-prob; the
finish reason is "stop", or "length" when max_new_tokens ran out first.

No host sync per token: sampling uses the exponential-race trick (argmax of p / Exp(1) noise, the
same distribution as multinomial) with a seedable `torch.Generator`, and whether every row has
stopped is read back only every `sync_every` steps.

Swappable pieces: `sample_fn(logits [B, V] fp32, params, generator) -> (tokens [B], logprobs [B])`
(default `sample_next`); attention/norm/RoPE through `model.ops` (see model/transformer.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from model.kv_cache import KVCache
from model.transformer import Transformer

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0                # 1 = off
    stop_token_ids: tuple[int, ...] = ()
    sync_every: int = 8               # steps between host checks of "all rows stopped"

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling parameters: {self}")


@dataclass
class GenerationOutput:
    tokens: torch.Tensor        # [B, N] long, new tokens, pad_token_id after a row's end
    logprobs: torch.Tensor      # [B, N] float32, 0 after a row's end
    lengths: torch.Tensor       # [B] long, new tokens per row (stop token included)
    finish_reasons: list[str]   # per row: "stop" | "length"

    def token_lists(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]

    def logprob_lists(self) -> list[list[float]]:
        return [row[:n].tolist() for row, n in zip(self.logprobs, self.lengths.tolist())]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits [..., V], tokens [...] -> log-probs [...] float32 of `tokens` under the
    temperature-scaled, untruncated distribution (temperature 0 means 1: greedy)."""
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] float32 -> (tokens [B] long, logprobs [B] float32), without host syncs."""
    if params.temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, token_logprobs(logits, tokens, 0)
    scaled = logits / params.temperature                                     # [B, V]
    logprobs_full = torch.log_softmax(scaled, dim=-1)                        # [B, V]
    masked = scaled
    if params.top_k:
        kth = torch.topk(masked, min(params.top_k, masked.shape[-1]), dim=-1).values[:, -1:]   # [B, 1]
        masked = masked.masked_fill(masked < kth, float("-inf"))
    if params.top_p < 1:
        sorted_logits, order = torch.sort(masked, dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop_sorted = probs.cumsum(-1) - probs > params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)          # back to vocab order
        masked = masked.masked_fill(drop, float("-inf"))
    probs = torch.softmax(masked, dim=-1)                                    # [B, V]
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)  # Exp(1): argmax(p/E) ~ p
    tokens = (probs / noise).argmax(-1)                                      # [B]
    return tokens, logprobs_full.gather(-1, tokens[:, None]).squeeze(-1)


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int,
             device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged prompts -> input_ids [B, P], attention_mask [B, P] (padding on the left)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt and every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, P - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], params: SamplingParams,
             pad_token_id: int, seed: int | None = None, generator: torch.Generator | None = None,
             sample_fn: Callable = sample_next) -> GenerationOutput:
    """Generate up to params.max_new_tokens for each prompt (lists of token ids)."""
    device = model.device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    ids, mask = left_pad(prompts, pad_token_id, device)                     # [B, P]
    B, P = ids.shape
    N = params.max_new_tokens
    cache = KVCache.allocate(model.cfg, B, P + N, model.dtype, device)
    ragged = any(len(p) != P for p in prompts)
    # Left padding puts every row's last prompt token in slot P-1: one logit row per sequence.
    hidden = model.forward_hidden(ids, mask if ragged else None, kv_cache=cache)[:, -1]   # [B, C]
    logits = model.logits(hidden)                                            # [B, V]

    stops = torch.tensor(sorted(params.stop_token_ids), dtype=torch.long, device=device)
    out_tokens = torch.full((B, N), pad_token_id, dtype=torch.long, device=device)
    out_logprobs = torch.zeros((B, N), dtype=torch.float32, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)                  # row has emitted a stop
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    steps = N
    for step in range(N):
        tokens, logprobs = sample_fn(logits, params, generator)              # [B], [B]
        alive = ~done
        out_tokens[:, step] = torch.where(alive, tokens, pad_token_id)
        out_logprobs[:, step] = torch.where(alive, logprobs, 0.0)
        lengths += alive
        done = done | (alive & torch.isin(tokens, stops))
        if step == N - 1 or ((step + 1) % params.sync_every == 0 and bool(done.all())):
            steps = step + 1
            break
        logits = model(tokens[:, None], (~done)[:, None], kv_cache=cache)[:, -1]   # [B, V]
    reasons = [FINISH_STOP if d else FINISH_LENGTH for d in done.tolist()]
    return GenerationOutput(out_tokens[:, :steps], out_logprobs[:, :steps], lengths, reasons)

"""Batched generation with a static KV cache: greedy, temperature, top-k, top-p, stop tokens.

    from deepretrieval.model.sampler import SamplingParams, generate
    out = generate(model, [prompt_ids_1, prompt_ids_2], SamplingParams(max_new_tokens=64,
                   temperature=0.7, top_p=0.9, stop_token_ids=(tok.eos_token_id,)), pad_token_id=0, seed=0)
    out.token_lists(), out.logprob_lists(), out.finish_reasons

Prompts of different lengths are left-padded into one [B, P] batch; the cache is sized to
P + max_new_tokens. A prompt that appears several times (a GRPO group repeats its prompt once per
completion) is prefilled once and its keys/values copied to the rows that repeat it. Each step
feeds one token per row. A row that has stopped leaves the batch at the next check of the stop
flags (every `sync_every` steps): the rows still running move to the front and the steps after run
only those (on the fast path, the smallest batch bucket that holds them), so a rollout's long tail
costs what its few long rows cost, not what the whole batch did. Each row still draws the sampling
noise it would draw in the whole batch, so the tokens are those of a run where stopped rows run on
(`compact=False`), up to the rounding of a smaller batch's kernels. Between checks, stopped rows
keep running (static shapes) with their tokens masked out and reported as padding.

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

Swappable piece: `sample_fn(logits [B, V] fp32, params, generator) -> (tokens [B], logprobs [B])`
(default `sample_next`).

Two decode paths share the prefill, the output bookkeeping (`StepOutputs`) and the stop checks.
On CUDA `generate` takes the fast one (model/fast_decode.py: Triton kernels, static buffers, the
decode step captured in a CUDA graph; its own noise stream, `deepretrieval.kernels.sampling.sample`); on CPU,
with a custom `sample_fn`, or with `fast=False`, the eager one: the model's forward over the
KVCache, then `sample_fn`. `fast=True` forces the fast path (on CPU it runs the kernels'
PyTorch references without a graph); `cuda_graphs=False` keeps its kernels but runs them eagerly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from deepretrieval.kernels.record_step import record_step
from deepretrieval.kernels.sampling import truncate
from deepretrieval.model import fast_decode
from deepretrieval.model.kv_cache import KVCache
from deepretrieval.model.transformer import Transformer

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0                # 1 = off
    stop_token_ids: tuple[int, ...] = ()
    sync_every: int = 8               # steps between host checks of which rows have stopped
    compact: bool = True              # at each check, stopped rows leave the batch (False: they run to the end)

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
    # gather - logsumexp rather than log_softmax: no second [..., V] tensor (the trainer calls this
    # on [B, T, V] logits of whole responses)
    return scaled.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(scaled, dim=-1)


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] float32 -> (tokens [B] long, logprobs [B] float32), without host syncs."""
    if params.temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, token_logprobs(logits, tokens, 0)
    scaled = logits / params.temperature                                     # [B, V]
    logprobs_full = torch.log_softmax(scaled, dim=-1)                        # [B, V]
    probs = torch.softmax(truncate(scaled, params.top_k, params.top_p), dim=-1)   # [B, V]
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)  # Exp(1): argmax(p/E) ~ p
    tokens = (probs / noise).argmax(-1)                                      # [B]
    return tokens, logprobs_full.gather(-1, tokens[:, None]).squeeze(-1)


def distinct_prompts(prompts: Sequence[Sequence[int]]) -> tuple[list[Sequence[int]], list[int]]:
    """(the distinct prompts in order of first appearance, each prompt's index among them)."""
    index: dict[tuple[int, ...], int] = {}
    source = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(p) for p in index], source


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


@dataclass
class StepOutputs:
    """What decoding has produced, updated in place on the device by `record`: no host sync, and
    safe inside a CUDA graph (the column to write is the device counter `step`)."""
    tokens: torch.Tensor        # [B, N] long, pad_token_id where a row produced nothing
    logprobs: torch.Tensor      # [B, N] float32, 0 there
    lengths: torch.Tensor       # [B] long
    done: torch.Tensor          # [B] bool: the row has emitted a stop token (or is batch padding)
    step: torch.Tensor          # [1] long: the column the next `record` writes
    stops: torch.Tensor         # [S] long stop token ids
    pad_token_id: int

    @classmethod
    def allocate(cls, batch: int, params: SamplingParams, pad_token_id: int,
                 device: torch.device | str) -> "StepOutputs":
        N = params.max_new_tokens
        return cls(tokens=torch.empty((batch, N), dtype=torch.long, device=device),
                   logprobs=torch.empty((batch, N), dtype=torch.float32, device=device),
                   lengths=torch.empty(batch, dtype=torch.long, device=device),
                   done=torch.empty(batch, dtype=torch.bool, device=device),
                   step=torch.empty(1, dtype=torch.long, device=device),
                   stops=torch.tensor(sorted(params.stop_token_ids), dtype=torch.long, device=device),
                   pad_token_id=pad_token_id)

    def head(self, rows: int) -> "StepOutputs":
        """Outputs of the first `rows` rows (views: what is recorded there lands here)."""
        return StepOutputs(self.tokens[:rows], self.logprobs[:rows], self.lengths[:rows], self.done[:rows],
                           self.step, self.stops, self.pad_token_id)

    def permute_rows(self, source: torch.Tensor) -> None:
        """Row i becomes row source[i] for i < len(source), source being a permutation of those rows."""
        m = len(source)
        for t in (self.tokens, self.logprobs, self.lengths, self.done):
            t[:m] = t[source]

    def reset(self, active_rows: int) -> None:
        """Empty outputs; rows from `active_rows` on are batch padding, finished from the start."""
        self.tokens.fill_(self.pad_token_id)
        self.logprobs.zero_()
        self.lengths.zero_()
        self.done.zero_()
        self.done[active_rows:] = True
        self.step.zero_()

    def record(self, tokens: torch.Tensor, logprobs: torch.Tensor, last_tokens: torch.Tensor | None = None,
               bump: tuple[torch.Tensor, ...] = ()) -> None:
        """Write the sampled tokens [B] and log-probs [B] of rows still running at column `step`
        (one launch on CUDA: kernels/record_step.py); optionally copy the tokens into `last_tokens`
        and add 1 to each `bump` tensor (the fast decoder's counters) in the same launch."""
        record_step(tokens, logprobs, self.tokens, self.logprobs, self.lengths, self.done, self.step, self.stops,
                    self.pad_token_id, last_tokens, bump)

    def result(self, rows: int, steps: int) -> GenerationOutput:
        """The first `rows` rows and `steps` columns, copied (the fast decoder reuses its buffers)."""
        reasons = [FINISH_STOP if d else FINISH_LENGTH for d in self.done[:rows].tolist()]
        return GenerationOutput(self.tokens[:rows, :steps].clone(), self.logprobs[:rows, :steps].clone(),
                                self.lengths[:rows].clone(), reasons)


class EagerDecoder:
    """The reference decode step: the model's forward over the KVCache, then `sample_fn`
    (same protocol as fast_decode.FastDecoder: `out`, `start`, `step`, `rows_for`, `narrow`)."""

    def __init__(self, model: Transformer, params: SamplingParams, sample_fn: Callable, out: StepOutputs):
        self.model, self.params, self.sample_fn, self.out = model, params, sample_fn, out
        self.batch = len(out.done)          # rows of the whole batch
        self.origin: torch.Tensor | None = None     # [R]: the batch row each row is, once narrowed

    def start(self, logits: torch.Tensor, cache: KVCache, generator: torch.Generator | None) -> None:
        self.cache, self.generator = cache, generator
        self._sample(logits)

    def step(self) -> None:
        alive = ~self.out.done
        self._sample(self.model(self.tokens[:, None], alive[:, None], kv_cache=self.cache)[:, -1])   # [B, V]

    @staticmethod
    def rows_for(running: int) -> int:
        """How many rows the steps run once `running` rows are left: exactly those."""
        return running

    def narrow(self, source: torch.Tensor, origin: torch.Tensor) -> None:
        """Run only rows source [R] from now on, row i being the current row source[i] and row
        origin[i] of the batch."""
        self.cache.copy_rows(source)
        self.cache = self.cache.head(len(source))
        self.tokens = self.tokens[source]
        self.out = self.out.head(len(source))
        self.origin = origin

    def _sample(self, logits: torch.Tensor) -> None:
        if self.origin is not None:
            # sample as for the whole batch, so that each row draws the noise it would draw there:
            # the same tokens as when stopped rows run on (the rows' logits are all it depends on)
            whole = logits.new_zeros(self.batch, logits.shape[-1])                    # [B, V]
            whole[self.origin] = logits
            logits = whole
        tokens, logprobs = self.sample_fn(logits, self.params, self.generator)        # [B], [B]
        if self.origin is not None:
            tokens, logprobs = tokens[self.origin], logprobs[self.origin]            # [R], [R]
        self.tokens = tokens
        self.out.record(tokens, logprobs)


@torch.no_grad()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], params: SamplingParams,
             pad_token_id: int, seed: int | None = None, generator: torch.Generator | None = None,
             sample_fn: Callable = sample_next, fast: bool | None = None,
             cuda_graphs: bool = True, on_step: Callable[[], None] | None = None) -> GenerationOutput:
    """Generate up to params.max_new_tokens for each prompt (lists of token ids).

    fast: None = the fast path on CUDA when the model and `sample_fn` allow it; True forces it
    (an error says why it cannot run); False forces the eager path. cuda_graphs: capture the fast
    path's decode step in a CUDA graph (False: the same kernels, launched eagerly). on_step: called
    on the host after each decode step is issued (e.g. a progress bar; it adds no sync)."""
    device = model.device
    if fast is None:
        fast = (device.type == "cuda" and sample_fn is sample_next
                and fast_decode.unsupported_reason(model) is None)
    elif fast:
        reason = fast_decode.unsupported_reason(model)
        if reason is None and sample_fn is not sample_next:
            reason = "it samples with kernels.sampling.sample, not a custom sample_fn"
        if reason:
            raise ValueError(f"fast decoding cannot run: {reason}; use fast=False")
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    # each distinct prompt is prefilled once (a GRPO group repeats its prompt group_size times);
    # row i then copies the keys/values and logits of distinct prompt source[i]
    distinct, source = distinct_prompts(prompts)
    ids, mask = left_pad(distinct, pad_token_id, device)                    # [U, P]
    B, (U, P) = len(prompts), ids.shape
    N = params.max_new_tokens
    ragged = any(len(p) != P for p in distinct)
    if fast:
        rows = fast_decode.batch_bucket(B)      # pad to a bucket with copies of row 0 (finished at once)
        source += [0] * (rows - B)
        decoder = fast_decode.decoder_for(model, rows, P + N, params, pad_token_id, cuda_graphs,
                                          lambda: StepOutputs.allocate(rows, params, pad_token_id, device))
    else:
        decoder = EagerDecoder(model, params, sample_fn, StepOutputs.allocate(B, params, pad_token_id, device))
    out = decoder.out
    out.reset(active_rows=B)
    if fast:
        logits, cache = decoder.prefill(model, ids, mask if ragged else None)      # [U, V]
    else:
        cache = KVCache.allocate(model.cfg, B, P + N, model.dtype, device)
        logits = fast_decode.prefill_logits(model, ids, mask if ragged else None, cache.head(U))  # [U, V]
        cache.length = P
    if source != list(range(len(source))):
        index = torch.tensor(source, device=device)
        cache.copy_rows(index)
        logits = logits[index]                                              # [rows, V]
    decoder.start(logits, cache, generator)                                 # token 0
    steps = 1
    on_step = on_step or (lambda: None)
    on_step()
    order = list(range(len(out.done)))      # order[j]: the row of the batch that row j of out holds now
    running = len(order)                    # the decoder steps out's first `running` rows
    while steps < N:
        if steps % params.sync_every == 0:
            done = out.done[:running].tolist()                              # the one host sync
            if all(done):
                break
            keep = decoder.rows_for(len(done) - sum(done))
            if params.compact and keep < running:
                # rows still decoding first, then stopped ones to fill the bucket; outputs follow
                front = [j for j, d in enumerate(done) if not d] + [j for j, d in enumerate(done) if d]
                source = torch.tensor(front, device=device)
                out.permute_rows(source)
                order[:running] = [order[j] for j in front]
                decoder.narrow(source[:keep], torch.tensor(order[:keep], device=device))
                running = keep
        decoder.step()
        steps += 1
        on_step()
    if order != sorted(order):
        inverse = sorted(range(len(order)), key=order.__getitem__)          # the row now holding row i
        out.permute_rows(torch.tensor(inverse, device=device))
    return out.result(B, steps)

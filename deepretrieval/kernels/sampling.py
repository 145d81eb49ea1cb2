"""Next-token sampling with no host synchronisation: greedy, temperature, top-k, top-p.

    ids, logprobs = sample(logits, uniform, temperature, top_k=0, top_p=1.0)

    logits       [B, V]  any float dtype
    uniform      [B, V]  fp32 noise in [0, 1), one draw per token id, e.g. a static buffer refilled
                         each step with `uniform.uniform_(generator=g)`; unused (may be None) when greedy
    temperature  0 means greedy: argmax, the first index on ties (as torch.argmax)
    top_k        0 = off;  top_p  1.0 = off;  applied in HF's order: temperature, top-k, top-p
                 (top-p keeps the smallest prefix of the sorted distribution whose mass reaches top_p)
    ids          [B] int64
    logprobs     [B] fp32: log_softmax(logits / temperature)[ids], the FULL tempered distribution
                 (no truncation), which is what the RL trainer recomputes; greedy reports temperature 1.

Sampling is an exponential race, as gpt-fast's `multinomial_sample_one_no_sync`: with
E_i = -log(u_i) ~ Exp(1), argmax_i p_i / E_i is token i with probability p_i. It is computed in log
space, argmax_i (z_i - log E_i) (the Gumbel-max trick), with truncated tokens at -inf, so there is
no softmax normalisation, no `torch.multinomial` and no sync. The noise comes in as an argument so
that draws are reproducible from a torch.Generator, a CUDA graph can replay the step with a static
noise buffer, and the reference and the Triton kernel see the same draws. Noise is indexed by token
id, so both pick the same token from the same noise whatever order they visit the candidates in.

Implementation choice: the reference below is the whole sampler, plain torch with static shapes
and no data-dependent control flow, so `torch.compile` can fuse it; `truncate` (top-k, top-p) is
also the eager sampler's (model/sampler.py), so both drop the same tokens. The plain-temperature and
greedy paths (the RL rollout and greedy evaluation) also have a Triton kernel
(kernels/sampling_triton.py) that reads logits and noise once, split over the vocabulary, where
eager torch makes about seven passes over [B, V]; `sample` picks it on CUDA.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton


def _logprob_at(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax(z)[ids] for z [B, V] fp32 and ids [B]."""
    return z.gather(-1, ids[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def _log_exp_noise(uniform: torch.Tensor) -> torch.Tensor:
    """log E with E = -log(u) ~ Exp(1); u = 0 gives +inf, a token that never wins."""
    return torch.log(-torch.log(uniform))


def truncate(z: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """z [B, V] fp32 with the tokens top-k, then top-p, drop set to -inf, as transformers'
    TopKLogitsWarper and TopPLogitsWarper: top-k keeps every token tied with the k-th (bf16 logits
    tie often); top-p drops a token once the tokens ranked before it hold top_p of the mass."""
    if top_k > 0:
        kth = z.topk(min(top_k, z.shape[-1]), dim=-1).values[:, -1:]       # [B, 1]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = z.sort(dim=-1, descending=True)                   # [B, V]
        probs = sorted_z.softmax(dim=-1)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p                 # the first never drops
        z = z.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float("-inf"))
    return z


def sample_reference(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float,
                     top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    if temperature == 0:
        ids = logits.argmax(dim=-1)
        return ids, _logprob_at(logits.float(), ids)
    z = logits.float() / temperature                                         # [B, V]
    ids = (truncate(z, top_k, top_p) - _log_exp_noise(uniform)).argmax(dim=-1)
    return ids, _logprob_at(z, ids)


def sample(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float,
           top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel for greedy / plain temperature on CUDA, the reference otherwise."""
    tensors = (logits,) if uniform is None else (logits, uniform)
    if top_k == 0 and top_p >= 1.0 and use_triton(*tensors):
        from deepretrieval.kernels.sampling_triton import sample_triton
        return sample_triton(logits, uniform, temperature, top_k, top_p)
    return sample_reference(logits, uniform, temperature, top_k, top_p)

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
and no data-dependent control flow, so `torch.compile` can fuse it; top-k/top-p sort only the
top-k candidates when top_k is set (a full-vocabulary sort otherwise). The plain-temperature and
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


def sample_reference(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float,
                     top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    if temperature == 0:
        ids = logits.argmax(dim=-1)
        return ids, _logprob_at(logits.float(), ids)
    z = logits.float() / temperature                                         # [B, V]
    if top_k > 0 or top_p < 1.0:
        if top_k > 0:
            cand_z, cand_ids = z.topk(min(top_k, z.shape[-1]), dim=-1)       # [B, K], sorted
        else:
            cand_z, cand_ids = z.sort(dim=-1, descending=True)
        if top_p < 1.0:
            probs = cand_z.softmax(dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            cand_z = cand_z.masked_fill(mass_before >= top_p, float("-inf"))
        pick = (cand_z - _log_exp_noise(uniform.gather(-1, cand_ids))).argmax(dim=-1, keepdim=True)
        ids = cand_ids.gather(-1, pick).squeeze(-1)
    else:
        ids = (z - _log_exp_noise(uniform)).argmax(dim=-1)
    return ids, _logprob_at(z, ids)


def sample(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float,
           top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel for greedy / plain temperature on CUDA, the reference otherwise."""
    tensors = (logits,) if uniform is None else (logits, uniform)
    if top_k == 0 and top_p >= 1.0 and use_triton(*tensors):
        from deepretrieval.kernels.sampling_triton import sample_triton
        return sample_triton(logits, uniform, temperature, top_k, top_p)
    return sample_reference(logits, uniform, temperature, top_k, top_p)

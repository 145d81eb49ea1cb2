"""Softmax statistics of LM-head logits, and their gradient: what the RL loss needs from the
vocabulary projection (rl/response_head.py), without a float32 copy of the logits.

    lse, z_token, pz = logit_stats(logits, tokens, temperature, entropy=True)
    dlogits = logit_grad(logits, v0, tokens, lse, pz, dlogp, dent, temperature)

    logits       [N, V] (logit_stats) or [N, v] columns v0 .. v0 + v of them (logit_grad); bf16/fp16/fp32
    tokens       [N] int64 token ids in [0, V)
    z = logits.float() / temperature            (row-wise over the vocabulary)
    lse          [N] fp32  logsumexp(z)
    z_token      [N] fp32  z[token]             (log-prob = z_token - lse)
    pz           [N] fp32  sum(softmax(z) * z), or None unless entropy   (entropy = lse - pz)
    dlogp, dent  [N] fp32 upstream gradients of the log-prob and the entropy (either may be None)
    dlogits      [N, v] in logits' dtype: d(sum dlogp * logp + sum dent * entropy) / d logits[:, v0:v0+v]
                 = (dlogp * (onehot - p) - dent * p * (z - pz)) / temperature,   p = exp(z - lse)

The reference is plain torch, op for op what rl/response_head.py did before this module existed
(so CPU results are unchanged). On CUDA (no grad) the Triton kernels (kernels/logit_stats_triton.py)
read each logit once: an online log-sum-exp with the entropy sum in one pass, and the gradient as
one elementwise pass, where eager torch makes about eight passes over an fp32 copy. At Qwen2.5's
vocabulary those passes were a third of a GRPO update's GPU time.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton


def logit_stats_reference(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: bool):
    z = logits.float()                                                    # [N, V] fp32
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)                                      # [N]
    z_token = z.gather(-1, tokens[:, None]).squeeze(-1)                   # [N]
    pz = torch.exp(z - lse[:, None]).mul_(z).sum(dim=-1) if entropy else None
    return lse, z_token, pz


def logit_grad_reference(logits: torch.Tensor, v0: int, tokens: torch.Tensor, lse: torch.Tensor,
                         pz: torch.Tensor | None, dlogp: torch.Tensor | None, dent: torch.Tensor | None,
                         temperature: float) -> torch.Tensor:
    _check_grad_args(logits, tokens, lse, pz, dlogp, dent)
    z = logits.to(torch.float32, copy=True)                               # [N, v] fp32, ours to overwrite
    if temperature != 1.0:
        z.div_(temperature)
    p = (z - lse[:, None]).exp_()                                         # [N, v]
    if dent is not None:                                                  # -dent * p * (z - pz)
        dz = z.sub_(pz[:, None]).mul_(p).mul_(dent[:, None]).neg_()
        if dlogp is not None:
            dz.addcmul_(p, dlogp[:, None], value=-1.0)
    else:
        dz = p.mul_(dlogp[:, None]).neg_()
    if dlogp is not None:                                                 # + dlogp * onehot
        v1 = v0 + logits.shape[1]
        inside = (tokens >= v0) & (tokens < v1)                           # [N], no host sync
        col = (tokens - v0).clamp(0, v1 - v0 - 1)
        dz.scatter_add_(1, col[:, None], (dlogp * inside)[:, None])
    if temperature != 1.0:
        dz.div_(temperature)
    return dz.to(logits.dtype)


def _check_grad_args(logits, tokens, lse, pz, dlogp, dent) -> None:
    N = logits.shape[0]
    if dlogp is None and dent is None:
        raise ValueError("logit_grad: give dlogp, dent or both")
    if dent is not None and pz is None:
        raise ValueError("logit_grad: the entropy gradient needs pz (logit_stats(..., entropy=True))")
    for name, t in (("tokens", tokens), ("lse", lse), ("pz", pz), ("dlogp", dlogp), ("dent", dent)):
        if t is not None and t.shape != (N,):
            raise ValueError(f"logit_grad: {name} must be [{N}], got {tuple(t.shape)}")


def logit_stats(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: bool):
    """(lse, z_token, pz or None): Triton on CUDA without grad, the reference elsewhere."""
    if logits.dim() != 2 or tokens.shape != logits.shape[:1]:
        raise ValueError(f"logit_stats: logits must be [N, V] and tokens [N]; got "
                         f"{tuple(logits.shape)} and {tuple(tokens.shape)}")
    if use_triton(logits, tokens):
        from deepretrieval.kernels.logit_stats_triton import logit_stats_triton
        return logit_stats_triton(logits, tokens, temperature, entropy)
    return logit_stats_reference(logits, tokens, temperature, entropy)


def logit_grad(logits: torch.Tensor, v0: int, tokens: torch.Tensor, lse: torch.Tensor,
               pz: torch.Tensor | None, dlogp: torch.Tensor | None, dent: torch.Tensor | None,
               temperature: float) -> torch.Tensor:
    """dlogits [N, v] in logits' dtype: Triton on CUDA without grad, the reference elsewhere."""
    tensors = [t for t in (logits, tokens, lse, pz, dlogp, dent) if t is not None]
    if use_triton(*tensors):
        from deepretrieval.kernels.logit_stats_triton import logit_grad_triton
        return logit_grad_triton(logits, v0, tokens, lse, pz, dlogp, dent, temperature)
    return logit_grad_reference(logits, v0, tokens, lse, pz, dlogp, dent, temperature)

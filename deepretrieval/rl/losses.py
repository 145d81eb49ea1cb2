"""Losses of the RL update: clipped policy loss, KL estimators, clipped value loss (the entropy
bonus is computed with the log-probs, rl/response_head.py).

    from deepretrieval.rl.losses import policy_loss, kl_estimate, value_loss, aggregate

Every per-token quantity is [B, T] over response tokens with a padding mask [B, T] (1 = real).
`aggregate` turns a per-token loss into a scalar. Its denominator can be given explicitly: the
trainer passes the token (or sequence) count of the whole *global mini-batch*, so that summing
the micro-batch losses of every rank gives exactly the loss one process computes on the whole
mini-batch (gradient accumulation and data parallelism then change nothing).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

AGGREGATIONS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k3")


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens (0 when there are none)."""
    return masked_sum(x, mask) / mask.sum().clamp(min=1)


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str,
              denominator: float | torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss [B, T] -> scalar.

    "token":    sum over all real tokens / denominator (default: number of real tokens), so long
                responses weigh more (DAPO / Dr. GRPO style).
    "sequence": mean over each response's tokens, then sum / denominator (default: B), so every
                response weighs the same (the original GRPO).
    """
    mask = mask.to(loss.dtype)
    if mode == "token":
        total = masked_sum(loss, mask)
        default = mask.sum().clamp(min=1)
    elif mode == "sequence":
        total = ((loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()
        default = torch.tensor(float(mask.shape[0]), dtype=loss.dtype, device=loss.device)
    else:
        raise ValueError(f"loss aggregation must be one of {AGGREGATIONS}, got {mode!r}")
    return total / (default if denominator is None else denominator)


class PolicyLoss(NamedTuple):
    loss: torch.Tensor           # scalar, aggregated
    clip_fraction: torch.Tensor  # scalar: share of real tokens where the clipped branch was taken
    approx_kl: torch.Tensor      # scalar: mean of k3(old || new) over real tokens, a drift monitor


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_low: float = 0.2, clip_high: float = 0.2,
                aggregation: str = "token",
                denominator: float | torch.Tensor | None = None) -> PolicyLoss:
    """PPO clipped surrogate: max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high)) per token.

    r = exp(logp - old_logp). For A > 0 the clip stops the ratio from being pushed above
    1 + clip_high; for A < 0 below 1 - clip_low. `clip_high > clip_low` is DAPO's clip-higher.
    advantages: [B, T] (GRPO broadcasts one value per response over its tokens).
    """
    mask = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logp.dtype), mask)
        approx_kl = masked_mean(kl_estimate(old_logp, logp, "k3"), mask)
    return PolicyLoss(aggregate(per_token, mask, aggregation, denominator), clip_fraction, approx_kl)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL").

    k1 = log pi - log pi_ref                  (unbiased, high variance, can be negative)
    k3 = exp(-k1) - 1 + k1 = ratio - 1 - log ratio, ratio = pi_ref / pi   (unbiased, >= 0)
    k3 is clamped to [-10, 10] in log space as verl's low_var_kl, so one far-off token cannot
    blow up the loss.
    """
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "k3":
        neg = torch.clamp(-diff, -10.0, 10.0)
        return torch.exp(neg) - 1.0 - neg
    raise ValueError(f"KL estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip_range: float | None = 0.2, aggregation: str = "token",
               denominator: float | torch.Tensor | None = None) -> ValueLoss:
    """0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2) per token (PPO2 value clip);
    without `clip_range` just 0.5 * (V - R)^2."""
    mask = mask.to(values.dtype)
    unclipped = (values - returns) ** 2
    if clip_range is None:
        per_token = unclipped
        clip_fraction = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
        clipped = (v_clipped - returns) ** 2
        per_token = torch.maximum(unclipped, clipped)
        with torch.no_grad():
            clip_fraction = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return ValueLoss(aggregate(0.5 * per_token, mask, aggregation, denominator), clip_fraction)

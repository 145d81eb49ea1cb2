"""Advantage estimators: GRPO group normalisation and PPO's GAE (plus the KL-shaped token reward).

    from deepretrieval.rl.advantages import grpo_advantages, gae, token_level_rewards

All functions are pure tensor maths (no model, no distributed state) so tests can check them
against hand-computed values. Responses are right-padded: `mask[b, t] = 1` for real response
tokens, 0 for padding after the end of the response.
"""
from __future__ import annotations

from typing import Callable

import torch


def grpo_advantages(rewards: torch.Tensor, group_size: int, normalize_std: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages, one per completion.

    rewards: [N] with N = n_prompts * group_size; the completions of one prompt are contiguous.
    A_i = r_i - mean(group), divided by (std(group) + eps) when `normalize_std` (Dr. GRPO turns
    that off). std is the unbiased sample std, as in DeepSeekMath / verl; a group of one has
    advantage 0 (there is nothing to compare against).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    grouped = rewards.float().view(-1, group_size)                      # [P, n]
    if group_size == 1:
        return torch.zeros_like(rewards, dtype=torch.float32)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def token_level_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                        kl_coef: float = 0.0) -> torch.Tensor:
    """PPO's per-token reward: -kl_coef * KL_t at every response token, plus the sequence score
    on the last real token.  scores: [B]; mask, kl: [B, T] -> [B, T]."""
    mask = mask.float()
    rewards = torch.zeros_like(mask)
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)                       # [B]
    has_tokens = mask.sum(dim=1) > 0
    rewards[torch.arange(mask.shape[0]), last] += scores.float() * has_tokens
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses.

    rewards, values, mask: [B, T]. delta_t = r_t + gamma * V_{t+1} - V_t, with V after the last
    real token = 0 (the episode ends there); A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns = advantages + values), both zero on padding.
    """
    mask = mask.float()
    values = values.float() * mask
    rewards = rewards.float() * mask
    B, T = mask.shape
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros(B, dtype=values.dtype, device=values.device)
    for t in reversed(range(T)):
        next_mask = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        next_value = values[:, t + 1] * next_mask if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * next_mask * last_gae
        advantages[:, t] = last_gae * mask[:, t]
    return advantages, (advantages + values) * mask


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased std, as verl); zero on padding.

    `all_reduce` sums a tensor over ranks (rl.distributed.all_reduce_sum) so every rank whitens
    with the statistics of the global batch, as one process would.
    """
    # float64 sums, and a variance clamped at 0: E[x^2] - E[x]^2 of nearly equal values (constant
    # rewards) cancels to a tiny negative number in float32, and rsqrt of it is NaN
    xd, mask = x.double(), mask.double()
    moments = torch.stack([mask.sum(), (xd * mask).sum(), (xd * xd * mask).sum()])
    if all_reduce is not None:
        moments = all_reduce(moments)
    n, s, ss = moments.unbind()
    mean = s / n
    var = ((ss - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)
    return ((xd - mean) * torch.rsqrt(var + eps) * mask).to(x.dtype)

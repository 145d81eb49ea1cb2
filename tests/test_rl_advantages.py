"""rl.advantages against hand-computed values (GRPO normalisation, GAE, KL-shaped rewards)."""
import math

import pytest
import torch

from deepretrieval.rl.advantages import gae, grpo_advantages, masked_whiten, token_level_rewards


def test_grpo_group_normalisation_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = grpo_advantages(rewards, group_size=4)
    s = math.sqrt(1 / 3)                       # unbiased std of [1, 0, 0, 1]
    expected = torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    # Dr. GRPO: no std division, only the group mean removed
    torch.testing.assert_close(grpo_advantages(rewards, 4, normalize_std=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    # groups are contiguous: a different grouping gives different numbers
    torch.testing.assert_close(grpo_advantages(torch.tensor([3.0, 1.0]), 2, normalize_std=False),
                               torch.tensor([1.0, -1.0]))
    assert torch.equal(grpo_advantages(torch.tensor([5.0, 1.0]), 1), torch.zeros(2))
    with pytest.raises(ValueError, match="multiple of group_size"):
        grpo_advantages(torch.ones(5), 4)


MASK = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
VALUES = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 9.0]])     # 9.0 sits on padding: ignored
REWARDS = torch.tensor([[0.0, 0, 1], [0, 2, 0]])


def test_gae_by_hand():
    adv, ret = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.8)
    # row 0: deltas (from the end) 0.6, 0.16, -0.32; A_t = delta_t + 0.72 * A_{t+1}
    a0 = [-0.32 + 0.72 * (0.16 + 0.72 * 0.6), 0.16 + 0.72 * 0.6, 0.6]
    # row 1 ends at t=1: delta_1 = 2 - 0.3 = 1.7, delta_0 = 0.9 * 0.3 - 0.1 = 0.17
    a1 = [0.17 + 0.72 * 1.7, 1.7, 0.0]
    torch.testing.assert_close(adv, torch.tensor([a0, a1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[a0[0] + 0.5, a0[1] + 0.2, a0[2] + 0.4],
                                                  [a1[0] + 0.1, a1[1] + 0.3, 0.0]]), atol=1e-6, rtol=0)


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    adv, ret = gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.8, 0.6], [1.9, 1.7, 0.0]]))


def test_token_level_rewards_puts_score_on_last_token_and_kl_everywhere():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    r = token_level_rewards(torch.tensor([1.0, 2.0]), MASK, kl, kl_coef=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.01, -0.02, 0.97], [-0.04, 1.95, 0.0]]))
    assert torch.equal(token_level_rewards(torch.tensor([1.0, 2.0]), MASK),
                       torch.tensor([[0.0, 0, 1], [0, 2, 0]]))


def test_masked_whiten_uses_real_tokens_only():
    x = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]),
                               atol=1e-6, rtol=0)
    # with an all-reduce that doubles the moments (two identical ranks) nothing changes but n-1
    doubled = masked_whiten(x, mask, all_reduce=lambda t: 2 * t)
    torch.testing.assert_close(doubled, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]) * math.sqrt(5 / 4 / 1),
                               atol=1e-6, rtol=0)

"""rl.losses against hand-computed values: clipping on both sides, aggregation, KL k1/k3
(and their unbiasedness against the exact KL), value clipping."""
import math

import pytest
import torch

from deepretrieval.rl.losses import aggregate, kl_estimate, masked_mean, policy_loss, value_loss

RATIOS = torch.tensor([[1.5, 0.5, 1.1, 0.7]])
ADV = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
MASK = torch.ones(1, 4)


def _logps():
    old = torch.log(torch.tensor([[0.2, 0.4, 0.3, 0.5]]))
    return (old + torch.log(RATIOS)).requires_grad_(True), old


def test_policy_loss_clips_on_both_sides():
    logp, old = _logps()
    out = policy_loss(logp, old, ADV, MASK, clip_low=0.2, clip_high=0.2)
    # per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   r=1.5, A=+1 -> -1.2 (clipped above)   r=0.5, A=+1 -> -0.5 (the pessimistic, unclipped one)
    #   r=1.1, A=-1 -> 1.1 (inside)             r=0.7, A=-1 -> 0.8 (clipped below)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    out.loss.backward()
    # d/dlogp of -A r is -A r on unclipped tokens, 0 where the clip is active
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 1.1, 0.0]]) / 4)


def test_policy_loss_clip_higher_and_identity_ratio():
    logp, old = _logps()
    out = policy_loss(logp, old, ADV, MASK, clip_low=0.2, clip_high=0.6)   # DAPO clip-higher
    assert out.loss.item() == pytest.approx((-1.5 - 0.5 + 1.1 + 0.8) / 4, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(0.25)
    # ratio 1 (first update): loss = -mean(A), approx_kl 0
    out = policy_loss(old, old, ADV * 3, MASK)
    assert out.loss.item() == pytest.approx(0.0) and out.approx_kl.item() == 0.0


def test_aggregation_token_vs_sequence_with_padding():
    loss = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert aggregate(loss, mask, "token").item() == pytest.approx(36 / 5)
    assert aggregate(loss, mask, "sequence").item() == pytest.approx((2 + 15) / 2)
    # explicit global denominators (how micro-batches sum to the mini-batch loss)
    assert aggregate(loss, mask, "token", 10.0).item() == pytest.approx(3.6)
    assert aggregate(loss, mask, "sequence", 4.0).item() == pytest.approx(17 / 4)
    halves = aggregate(loss[:1], mask[:1], "token", 5.0) + aggregate(loss[1:], mask[1:], "token", 5.0)
    assert halves.item() == pytest.approx(aggregate(loss, mask, "token").item())
    assert masked_mean(loss, mask).item() == pytest.approx(36 / 5)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(loss, mask, "batch")


def test_kl_estimators_by_hand():
    logp = torch.log(torch.tensor([0.5, 0.25]))
    ref = torch.log(torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([math.log(2), -math.log(2)]))
    # k3 = q/p - 1 - log(q/p)
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"),
                               torch.tensor([0.5 - 1 + math.log(2), 2 - 1 - math.log(2)]))
    assert torch.equal(kl_estimate(ref, ref, "k3"), torch.zeros(2))
    with pytest.raises(ValueError, match="KL estimator"):
        kl_estimate(logp, ref, "k2")


def test_kl_estimators_are_unbiased_for_the_exact_kl():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())
    g = torch.Generator().manual_seed(0)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    for est in ("k1", "k3"):
        mc = kl_estimate(p.log()[x], q.log()[x], est).mean().item()
        assert mc == pytest.approx(exact, abs=5e-3), est


def test_value_loss_clipping_by_hand():
    values = torch.tensor([[1.0, 2.0]])
    old = torch.tensor([[0.5, 2.0]])
    returns = torch.tensor([[2.0, 0.0]])
    mask = torch.ones(1, 2)
    out = value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: max((1-2)^2, (0.7-2)^2) = 1.69 (clipped); token 1: 4 either way
    assert out.loss.item() == pytest.approx(0.5 * (1.69 + 4) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    assert value_loss(values, old, returns, mask, clip_range=None).loss.item() == pytest.approx(0.5 * 5 / 2)

"""What differs between GRPO and PPO in an RL step, behind one small interface; the loop both
share (rollouts, log-probs, the clipped policy loss, KL and entropy terms, optimiser steps,
checkpoints) is rl/trainer.py.

    algo = build_algorithm(cfg, lm, setup, autocast, pad_token_id, device, kl_in_reward)
    actor = ResponseModel(lm, value_head=algo.shared_value_head)   # PPO's value head on the trunk
    values = algo.values(batch, actor_out)          # no-grad pass: [m, R] or None
    algo.advantages(samples)                        # sets Sample.advantages (PPO: .returns too)
    loss_term, metrics = algo.actor_terms(batch, actor_out, denom, share)   # joins the actor loss
    metrics = algo.critic_backward(batch, denom, share, scale)    # after the actor's backward
    algo.optimizer_step()                           # once per mini-batch, after the actor's
    payload.update(algo.state_dict()); algo.load_state_dict(payload)        # checkpoints

`batch` is rl.rollout.collate's Batch holding the trainer's loss fields (old log-probs,
advantages, reference log-probs) and `algo.fields`; `denom` the global token (or sequence) count
of the mini-batch, so each term is this rank's share of the mini-batch loss (rl/losses.py);
`share` = this micro-batch's tokens / the mini-batch's global tokens, the weight of a per-token
fraction in the mini-batch mean; `scale` = the number of ranks (FSDP averages gradients, each
rank's loss is its share of the sum). Metrics are dicts of 0-d tensors, summed over
micro-batches and ranks by the trainer.

GRPO: group-normalised advantages per prompt (rl/advantages.py), no value function.
PPO: token rewards (the score on the last token; -kl_coef * KL per token when kl_mode =
"reward"), GAE over a critic's values, whitened with global statistics. The critic is a separate
copy of the policy trunk with its own optimiser (`critic = "separate"`; its loss is
backpropagated here, after the actor's, so the two graphs never coexist), or a value head on the
policy's trunk (`critic = "shared"`: its loss joins the actor's, weighted by value_coef; the
trainer gives the head the critic's learning rate).
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager

import torch

from deepretrieval.rl.advantages import gae, grpo_advantages, masked_whiten, token_level_rewards
from deepretrieval.rl.config import RLConfig
from deepretrieval.rl.distributed import all_reduce_sum, full_state, load_full_state
from deepretrieval.rl.losses import kl_estimate, value_loss
from deepretrieval.rl.models import ResponseModel, critic_copy
from deepretrieval.rl.optim import build_optimizer, build_scheduler, optimizer_step
from deepretrieval.rl.rollout import Batch, Sample, collate

Metrics = dict[str, torch.Tensor]


class Algorithm:
    """The interface; the defaults are "no value function"."""
    shared_value_head = False          # the actor carries a value head (PPO, critic = "shared")
    fields: tuple[str, ...] = ()       # Sample fields the update reads besides the policy loss's
    advantages_read_policy_pass = False   # advantages() reads the prepare pass's outputs

    def __init__(self, cfg: RLConfig):
        self.cfg = cfg

    def values(self, batch: Batch, actor_out) -> torch.Tensor | None:
        return None

    def advantages(self, samples: list[Sample]) -> None:
        raise NotImplementedError

    def actor_terms(self, batch: Batch, actor_out, denom, share) -> tuple[torch.Tensor | None, Metrics]:
        return None, {}

    def critic_backward(self, batch: Batch, denom, share, scale: float) -> Metrics:
        return {}

    def optimizer_step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        pass


class GRPO(Algorithm):
    """Group-relative advantages; nothing beyond the shared policy loss."""

    def advantages(self, samples: list[Sample]) -> None:
        scores = torch.tensor([s.reward for s in samples], dtype=torch.float32)
        adv = grpo_advantages(scores, self.cfg.group_size, self.cfg.normalize_std)   # [N]
        for s, a in zip(samples, adv):
            s.advantages = torch.full((len(s.response_ids),), float(a))


class PPO(Algorithm):
    """GAE over a critic's values (a separate trunk, or a head on the policy's)."""
    fields = ("values", "returns")
    advantages_read_policy_pass = True    # values (a shared head), old log-probs (KL in reward)

    def __init__(self, cfg: RLConfig, lm: torch.nn.Module,
                 setup: Callable[[ResponseModel], ResponseModel], autocast: Callable[[], ContextManager], pad_token_id: int, device: torch.device,
                 kl_in_reward: bool):
        super().__init__(cfg)
        self.shared_value_head = cfg.critic == "shared"
        self.autocast, self.pad_token_id, self.device = autocast, pad_token_id, device
        self.kl_in_reward = kl_in_reward
        self.critic = self.critic_opt = self.critic_sched = None
        if cfg.critic == "separate":
            self.critic = setup(ResponseModel(critic_copy(lm), policy=False, value_head=True))
            self.critic_opt = build_optimizer(self.critic.parameters(), cfg.critic_optim)
            self.critic_sched = build_scheduler(self.critic_opt, cfg.critic_optim, cfg.optimizer_steps)

    def values(self, batch: Batch, actor_out) -> torch.Tensor | None:
        if self.critic is None:
            return actor_out.values                                       # [m, R] shared head
        with self.autocast():
            return self.critic(batch.input_ids, batch.response_start,
                               batch.response_mask.shape[1]).values        # [m, R]

    def advantages(self, samples: list[Sample]) -> None:
        cfg = self.cfg
        scores = torch.tensor([s.reward for s in samples], dtype=torch.float32)     # [N]
        fields = ("old_logprobs", "values") + (("ref_logprobs",) if self.kl_in_reward else ())
        b = collate(samples, fields, self.pad_token_id, torch.device("cpu"))
        kl = (kl_estimate(b.fields["old_logprobs"], b.fields["ref_logprobs"], cfg.kl_estimator)
              if self.kl_in_reward else None)                             # [N, R]
        rewards = token_level_rewards(scores, b.response_mask, kl, cfg.kl_coef)     # [N, R]
        adv, ret = gae(rewards, b.fields["values"], b.response_mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = masked_whiten(adv, b.response_mask,
                                all_reduce=lambda t: all_reduce_sum(t.to(self.device)).cpu())
        for i, s in enumerate(samples):
            r = len(s.response_ids)
            s.advantages, s.returns = adv[i, :r].clone(), ret[i, :r].clone()

    def _value_loss(self, values: torch.Tensor, batch: Batch, denom, share
                    ) -> tuple[torch.Tensor, Metrics]:
        f, cfg = batch.fields, self.cfg
        vl = value_loss(values, f["values"], f["returns"], batch.response_mask, cfg.value_clip,
                        cfg.loss_aggregation, denom)
        return vl.loss, {"loss/value": vl.loss, "value_clip_frac": vl.clip_fraction * share}

    def actor_terms(self, batch: Batch, actor_out, denom, share) -> tuple[torch.Tensor | None, Metrics]:
        if not self.shared_value_head:
            return None, {}
        loss, metrics = self._value_loss(actor_out.values, batch, denom, share)
        return self.cfg.value_coef * loss, metrics

    def critic_backward(self, batch: Batch, denom, share, scale: float) -> Metrics:
        if self.critic is None:
            return {}
        with self.autocast():
            values = self.critic(batch.input_ids, batch.response_start,
                                 batch.response_mask.shape[1]).values       # [m, R]
        loss, metrics = self._value_loss(values, batch, denom, share)
        (loss * scale).backward()
        return metrics

    def optimizer_step(self) -> None:
        if self.critic is not None:
            optimizer_step(self.critic, self.critic_opt, self.critic_sched,
                           self.cfg.critic_optim.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        """A collective (every rank calls it); the tensors land on rank 0."""
        if self.critic is None:
            return {}
        model, optim = full_state(self.critic, self.critic_opt)
        return {"critic": model, "critic_optim": optim, "critic_sched": self.critic_sched.state_dict()}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        if self.critic is not None:
            load_full_state(self.critic, self.critic_opt, payload["critic"], payload["critic_optim"])
            self.critic_sched.load_state_dict(payload["critic_sched"])


def build_algorithm(cfg: RLConfig, lm: torch.nn.Module, setup: Callable[[ResponseModel], ResponseModel],
                    autocast: Callable[[], ContextManager], pad_token_id: int, device: torch.device,
                    kl_in_reward: bool) -> Algorithm:
    """GRPO, or PPO with its critic built from `lm` and prepared by `setup` (gradient
    checkpointing, compilation, sharding: what the trainer does to its own models)."""
    if cfg.algorithm == "grpo":
        return GRPO(cfg)
    return PPO(cfg, lm, setup, autocast, pad_token_id, device, kl_in_reward)

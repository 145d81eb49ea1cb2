"""GRPO and PPO training loop under torch.distributed (one process, or torchrun with N).

    from deepretrieval.rl.trainer import train
    metrics = train(rl_config, policy_model, tokenizer, task, "runs/demo", resume=False)

    torchrun --nproc_per_node=N <your entry point that calls train(...)>    # same arguments

One RL step:
  1. draw `prompts_per_step` prompt indices (same on every rank: PromptStream);
  2. lay them out as [mini-batch, rank, prompt]: rank r owns a contiguous slice of every
     mini-batch, so the global mini-batches (and hence every optimiser step) are the same for any
     number of ranks;
  3. generate `group_size` completions per owned prompt with the sampler on the rollout copy of the
     policy, scoring each chunk in the reward pool while the next one is generated;
  4. recompute log-probs with the trainer's policy (the ratio's denominator; the largest
     |sampler - trainer| difference is logged as `logprob_diff/max`), the reference's log-probs,
     and the critic's values;
  5. advantages: GRPO group-normalised per prompt; PPO GAE over token rewards (score on the last
     token, optionally -kl_coef * KL per token), whitened with global statistics;
  6. `epochs_per_step` passes over the mini-batches: micro-batches with gradient accumulation,
     every loss normalised by the *global* token / sequence count of the mini-batch (so the sum
     over micro-batches and ranks is the one-process loss), FSDP2 reduce-scatter, clipping, AdamW;
  7. refresh the rollout copy, log, checkpoint.

Precision: fp32 master weights. `precision="bf16"` (the default on CUDA) runs forward/backward
under bf16 autocast, with the residual stream in bf16 as in the bf16 copies of the policy that
generate and serve as the reference, and AdamW's fused kernel. The reference model is frozen
(never in an optimiser, no grads) and sharded like the policy. `compile_blocks` runs every
transformer block through torch.compile (inside gradient checkpointing, under FSDP2's hooks);
`keep_head_logits` keeps the LM head's logits for backward.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepretrieval.rl import checkpoint as ckpt
from deepretrieval.rl.advantages import gae, grpo_advantages, masked_whiten, token_level_rewards
from deepretrieval.rl.config import RLConfig
from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.distributed import (DistInfo, all_gather_objects, all_reduce_max, all_reduce_sum,
                            broadcast_object, finish, full_model_state, full_state,
                            init_distributed, load_full_state, shard)
from deepretrieval.rl.interfaces import Task, TokenizerLike
from deepretrieval.rl.losses import aggregate, kl_estimate, policy_loss, value_loss
from deepretrieval.rl.models import (ResponseModel, compile_blocks, critic_copy, enable_gradient_checkpointing,
                       frozen_copy)
from deepretrieval.rl.optim import build_optimizer, build_scheduler
from deepretrieval.rl.reward_pool import RewardPool
from deepretrieval.rl.rollout import Sample, collate, generate_rollouts, render_prompt
from deepretrieval.rl.run_logging import RunLogger

StepCallback = Callable[[int, dict[str, float]], None]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(self, cfg: RLConfig, policy: nn.Module, tokenizer: TokenizerLike, task: Task,
                 run_dir: str | Path, device: str | None = None):
        self.cfg = cfg
        self.dist: DistInfo = init_distributed(device)
        cfg.check_world(self.dist.world_size)
        self.tokenizer = tokenizer
        self.task = task
        self.run_dir = Path(run_dir)
        dev = self.dist.device
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
        if self.bf16 and dev.type != "cuda":
            raise ValueError("precision='bf16' needs a CUDA device; use 'fp32' on CPU")
        torch.manual_seed(cfg.seed)                       # same value-head init on every rank
        self.export_dtype = next(policy.parameters()).dtype   # what the user handed in
        lm = policy.to(device=dev, dtype=torch.float32)   # fp32 master weights
        lm.requires_grad_(True)                           # loaders may hand out frozen models
        # The sampler needs a plain (unsharded) model; one process in fp32 samples from the policy
        # itself, otherwise from a full copy refreshed after every step.
        self.rollout_lm = lm
        if self.dist.distributed or self.bf16:
            self.rollout_lm = frozen_copy(lm).to(torch.bfloat16 if self.bf16 else torch.float32)
        self.reference = None
        if cfg.kl_coef > 0:     # frozen: bf16 weights suffice when compute is bf16 anyway
            self.reference = ResponseModel(frozen_copy(lm).to(torch.bfloat16 if self.bf16
                                                              else torch.float32))
        ppo = cfg.algorithm == "ppo"
        self.critic = None
        if ppo and cfg.critic == "separate":
            self.critic = ResponseModel(critic_copy(lm), policy=False, value_head=True)
        self.actor = ResponseModel(lm, value_head=ppo and cfg.critic == "shared",
                                   keep_logits=cfg.keep_head_logits)
        for model in (self.actor, self.critic):
            if model is not None and cfg.gradient_checkpointing:
                enable_gradient_checkpointing(model.lm)
        for model in (self.actor, self.critic, self.reference):
            if model is not None:
                if cfg.compile_blocks:        # after checkpointing, before sharding: per block
                    compile_blocks(model.lm)
                shard(model, self.dist, list(model.lm.layers))
        optimizer_steps = cfg.total_steps * cfg.epochs_per_step * cfg.num_mini_batches
        if self.actor.value_head is not None:
            head = set(map(id, self.actor.value_head.parameters()))
            groups = [{"params": [p for p in self.actor.parameters() if id(p) not in head]},
                      {"params": list(self.actor.value_head.parameters()), "lr": cfg.critic_optim.lr}]
            self.actor_opt = build_optimizer(groups, cfg.actor_optim)
        else:
            self.actor_opt = build_optimizer(self.actor.parameters(), cfg.actor_optim)
        self.actor_sched = build_scheduler(self.actor_opt, cfg.actor_optim, optimizer_steps)
        if self.critic is not None:
            self.critic_opt = build_optimizer(self.critic.parameters(), cfg.critic_optim)
            self.critic_sched = build_scheduler(self.critic_opt, cfg.critic_optim, optimizer_steps)
        self.prompts = list(task.prompts())
        self._prompt_ids: dict[int, list[int]] = {}
        self.stream = PromptStream(len(self.prompts), cfg.seed)
        self.pool = RewardPool(task.reward, cfg.reward_workers, cfg.reward_pool)
        self.step = 0
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._last_samples: list[Sample] = []

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16)

    def _ids(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            text = render_prompt(self.prompts[index], getattr(self.tokenizer, "chat_template", None))
            ids = self.tokenizer.encode(text)
            if not ids:
                raise ValueError(f"prompt {index} encodes to no tokens")
            self._prompt_ids[index] = ids
        return self._prompt_ids[index]

    def _micro_batches(self, samples: list[Sample]):
        m = self.cfg.micro_batch_size
        return [samples[i:i + m] for i in range(0, len(samples), m)]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ one RL step
    def _my_prompts(self, indices: list[int]) -> list[tuple[int, int]]:
        """(global position, prompt index) of this rank's prompts: [mini, rank, k] layout."""
        per = self.cfg.mini_batch_prompts // self.dist.world_size
        mine = []
        for j in range(self.cfg.num_mini_batches):
            base = j * self.cfg.mini_batch_prompts + self.dist.rank * per
            mine.extend((pos, indices[pos]) for pos in range(base, base + per))
        return mine

    @torch.no_grad()
    def _prepare(self, samples: list[Sample], stats: dict[str, float]) -> None:
        """Old log-probs (trainer recomputation), reference log-probs, values."""
        cfg, dev = self.cfg, self.dist.device
        max_diff = torch.zeros((), device=dev)
        sums = torch.zeros(3, dtype=torch.float64, device=dev)     # diff, kl, entropy (token sums)
        outputs = []                    # (micro-batch, logprobs, ref logprobs, values) on the device
        for mb in self._micro_batches(samples):
            b = collate(mb, ("sampler_logprobs",), self.tokenizer.pad_token_id, dev)
            mask = b.response_mask
            with self._autocast():
                out = self.actor(b.input_ids, b.response_start, mask.shape[1],
                                 cfg.sampling.temperature, entropy=True)
                ref = (self.reference(b.input_ids, b.response_start, mask.shape[1],
                                      cfg.sampling.temperature).logprobs
                       if self.reference is not None else None)
                values = (self.critic(b.input_ids, b.response_start, mask.shape[1]).values
                          if self.critic is not None else out.values)
            diff = (out.logprobs - b.fields["sampler_logprobs"]).abs() * mask
            max_diff = torch.maximum(max_diff, diff.max())
            sums[0] += diff.sum()
            sums[2] += (out.entropy * mask).sum()
            if ref is not None:
                sums[1] += (kl_estimate(out.logprobs, ref, cfg.kl_estimator) * mask).sum()
            outputs.append((mb, out.logprobs, ref, values.float() if values is not None else None))
        # Device-to-host copies only after every micro-batch is queued: a copy waits for the GPU,
        # and the host would otherwise idle the GPU while it launches the next micro-batch.
        for mb, *tensors in outputs:
            old_cpu, ref_cpu, values_cpu = (t.cpu() if t is not None else None for t in tensors)
            for i, s in enumerate(mb):
                r = len(s.response_ids)
                s.old_logprobs = old_cpu[i, :r]
                s.ref_logprobs = ref_cpu[i, :r] if ref_cpu is not None else None
                s.values = values_cpu[i, :r] if values_cpu is not None else None
        tokens = all_reduce_sum(torch.tensor(float(sum(len(s.response_ids) for s in samples)),
                                             dtype=torch.float64, device=dev))
        sums = all_reduce_sum(sums) / tokens
        stats["logprob_diff/max"] = all_reduce_max(max_diff).item()
        stats["logprob_diff/mean"] = sums[0].item()
        stats["kl"] = sums[1].item()
        stats["entropy"] = sums[2].item()

    def _advantages(self, samples: list[Sample]) -> None:
        cfg = self.cfg
        scores = torch.tensor([s.reward for s in samples], dtype=torch.float32)
        if cfg.algorithm == "grpo":
            adv = grpo_advantages(scores, cfg.group_size, cfg.normalize_std)
            for s, a in zip(samples, adv):
                s.advantages = torch.full((len(s.response_ids),), float(a))
            return
        b = collate(samples, ("old_logprobs", "ref_logprobs", "values")
                    if self.reference is not None else ("old_logprobs", "values"),
                    self.tokenizer.pad_token_id, torch.device("cpu"))
        kl = None
        if self.reference is not None and cfg.kl_mode == "reward":
            kl = kl_estimate(b.fields["old_logprobs"], b.fields["ref_logprobs"], cfg.kl_estimator)
        rewards = token_level_rewards(scores, b.response_mask, kl, cfg.kl_coef)
        adv, ret = gae(rewards, b.fields["values"], b.response_mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            dev = self.dist.device
            adv = masked_whiten(adv, b.response_mask,
                                all_reduce=lambda t: all_reduce_sum(t.to(dev)).cpu())
        for i, s in enumerate(samples):
            r = len(s.response_ids)
            s.advantages, s.returns = adv[i, :r].clone(), ret[i, :r].clone()

    def _update(self, samples: list[Sample]) -> dict[str, float]:
        """epochs x mini-batches of optimiser steps; returns loss metrics (global means)."""
        cfg, dev, W = self.cfg, self.dist.device, self.dist.world_size
        ppo = cfg.algorithm == "ppo"
        per_mini = len(samples) // cfg.num_mini_batches          # contiguous by construction
        minis = [samples[j * per_mini:(j + 1) * per_mini] for j in range(cfg.num_mini_batches)]
        counts = all_reduce_sum(torch.tensor(
            [[sum(len(s.response_ids) for s in mb), len(mb)] for mb in minis],
            dtype=torch.float32, device=dev))                    # [num_mini, 2] global
        fields = ("old_logprobs", "advantages") + (("ref_logprobs",) if self.reference else ()) \
            + (("values", "returns") if ppo else ())
        names = ["loss/policy", "loss/kl", "loss/entropy", "loss/value", "clip_frac",
                 "approx_kl", "value_clip_frac"]
        totals = torch.zeros(len(names), dtype=torch.float64, device=dev)
        grad_norms = []
        for _ in range(cfg.epochs_per_step):
            for j, mini in enumerate(minis):
                n_tok, n_seq = counts[j, 0], counts[j, 1]
                denom = n_tok if cfg.loss_aggregation == "token" else n_seq
                part = torch.zeros(len(names), dtype=torch.float64, device=dev)
                for mb in self._micro_batches(mini):
                    b = collate(mb, fields, self.tokenizer.pad_token_id, dev)
                    mask, f = b.response_mask, b.fields
                    local_tok = mask.sum()
                    with self._autocast():
                        out = self.actor(b.input_ids, b.response_start, mask.shape[1],
                                         cfg.sampling.temperature, entropy=cfg.entropy_coef > 0)
                    pl = policy_loss(out.logprobs, f["old_logprobs"], f["advantages"], mask,
                                     cfg.clip_low, cfg.clip_high, cfg.loss_aggregation, denom)
                    loss = pl.loss
                    kl_loss = ent_loss = vf = torch.zeros((), device=dev)
                    if self.reference is not None and cfg.kl_mode == "loss":
                        kl_loss = aggregate(kl_estimate(out.logprobs, f["ref_logprobs"],
                                                        cfg.kl_estimator), mask,
                                            cfg.loss_aggregation, denom)
                        loss = loss + cfg.kl_coef * kl_loss
                    if cfg.entropy_coef:
                        ent_loss = aggregate(out.entropy, mask, cfg.loss_aggregation, denom)
                        loss = loss - cfg.entropy_coef * ent_loss
                    vclip = torch.zeros((), device=dev)
                    if out.values is not None:                     # shared trunk
                        vl = value_loss(out.values, f["values"], f["returns"], mask,
                                        cfg.value_clip, cfg.loss_aggregation, denom)
                        vf, vclip = vl.loss, vl.clip_fraction
                        loss = loss + cfg.value_coef * vf
                    # FSDP averages gradients over ranks; each rank's loss is already its share
                    # of the global mean, so scale by W to get the sum.
                    (loss * W).backward()
                    if self.critic is not None:
                        with self._autocast():
                            values = self.critic(b.input_ids, b.response_start, mask.shape[1]).values
                        vl = value_loss(values, f["values"], f["returns"], mask, cfg.value_clip,
                                        cfg.loss_aggregation, denom)
                        (vl.loss * W).backward()
                        vf, vclip = vl.loss, vl.clip_fraction
                    part += torch.stack([pl.loss.detach(), kl_loss.detach(), ent_loss.detach(),
                                         vf.detach(), pl.clip_fraction * local_tok / n_tok,
                                         pl.approx_kl * local_tok / n_tok,
                                         vclip * local_tok / n_tok]).double()
                grad_norms.append(self._optimizer_step(self.actor, self.actor_opt, self.actor_sched,
                                                       cfg.actor_optim.grad_clip))
                if self.critic is not None:
                    self._optimizer_step(self.critic, self.critic_opt, self.critic_sched,
                                         cfg.critic_optim.grad_clip)
                totals += all_reduce_sum(part)
        n_updates = cfg.epochs_per_step * cfg.num_mini_batches
        metrics = {k: (totals[i] / n_updates).item() for i, k in enumerate(names)}
        for key, used in (("loss/value", ppo), ("value_clip_frac", ppo),
                          ("loss/entropy", cfg.entropy_coef > 0),
                          ("loss/kl", self.reference is not None and cfg.kl_mode == "loss")):
            if not used:
                del metrics[key]
        metrics["grad_norm"] = torch.stack(grad_norms).double().mean().item()   # one sync, at the end
        metrics["lr"] = self.actor_sched.get_last_lr()[0]
        return metrics

    @staticmethod
    def _optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, sched, clip: float | None
                        ) -> torch.Tensor:
        """Clip, step, zero the grads; returns the grad norm before clipping as a 0-d tensor (a
        float here would make the host wait for the GPU after every mini-batch)."""
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return norm.detach().float()

    def _sync_rollout_model(self) -> None:
        if self.rollout_lm is self.actor.lm:
            return
        state = full_model_state(self.actor, self.dist)
        with torch.no_grad():
            for name, p in self.rollout_lm.state_dict().items():
                p.copy_(state["lm." + name])

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        t_step = time.perf_counter()
        self.step += 1
        mine = self._my_prompts(self.stream.next(cfg.prompts_per_step))
        work = [(pos, idx, self._ids(idx), self.prompts[idx]) for pos, idx in mine]
        stop_ids = list(self.tokenizer.stop_token_ids)
        samples, pending, t_gen = generate_rollouts(
            self.rollout_lm, work, cfg.group_size, cfg.sampling, cfg.rollout_chunk_prompts,
            self.tokenizer.pad_token_id, stop_ids, cfg.seed, self.step, self._decode, self.pool)
        t0 = time.perf_counter()
        for chunk, fut in pending:
            result = fut.result()
            for s, r, d in zip(chunk, result.rewards, result.details):
                s.reward, s.details = r, d
        t_reward = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats: dict[str, float] = {}
        self._prepare(samples, stats)
        self._advantages(samples)
        t_prepare = time.perf_counter() - t0
        stats.update(self._update(samples))
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._sync_rollout_model()
        t_sync = time.perf_counter() - t0
        stats.update(self._sample_metrics(samples))
        gen_tokens, all_tokens = all_reduce_sum(torch.tensor(
            [sum(len(s.response_ids) for s in samples),
             sum(len(s.response_ids) + len(s.prompt_ids) for s in samples)],
            dtype=torch.float64, device=self.dist.device)).tolist()
        stats.update({"time/generate": t_gen, "time/reward": t_reward, "time/train": t_train,
                      "time/prepare": t_prepare, "time/sync": t_sync,
                      "time/step": time.perf_counter() - t_step,
                      "tokens_per_s/generate": gen_tokens / max(t_gen, 1e-9),
                      "tokens_per_s/train": all_tokens * cfg.epochs_per_step / max(t_train, 1e-9)})
        self._last_samples = samples
        return stats

    def _sample_metrics(self, samples: list[Sample]) -> dict[str, float]:
        """Reward, reward components, lengths: gathered from every rank."""
        local = [(s.reward, len(s.response_ids), s.finish_reason == "stop",
                  {k: v for k, v in s.details.items() if isinstance(v, (int, float))})
                 for s in samples]
        rows = [r for part in all_gather_objects(local) for r in part]
        rewards = np.array([r[0] for r in rows], dtype=np.float64)
        lengths = np.array([r[1] for r in rows], dtype=np.float64)
        out = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
               "response_length/mean": float(lengths.mean()),
               "response_length/max": float(lengths.max()),
               "stop_fraction": float(np.mean([r[2] for r in rows]))}
        for key in sorted({k for r in rows for k in r[3]}):
            out[f"reward/{key}"] = float(np.mean([r[3][key] for r in rows if key in r[3]]))
        return out

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        policy_sd, policy_opt = full_state(self.actor, self.actor_opt)
        critic_sd = critic_opt = None
        if self.critic is not None:
            critic_sd, critic_opt = full_state(self.critic, self.critic_opt)
        rngs = all_gather_objects(rng_state())
        if self.dist.is_main:
            payload = {"step": self.step, "stream": self.stream.state_dict(), "rng": rngs,
                       "config": self.cfg.to_dict(), "world_size": self.dist.world_size,
                       "policy": policy_sd, "policy_optim": policy_opt,
                       "policy_sched": self.actor_sched.state_dict(),
                       "critic": critic_sd, "critic_optim": critic_opt,
                       "critic_sched": self.critic_sched.state_dict() if self.critic else None}
            ckpt.save_checkpoint(self.ckpt_dir, self.step, payload, self.cfg.keep_checkpoints)
        if self.dist.distributed:
            torch.distributed.barrier()

    def load(self, path: Path | None = None) -> bool:
        """Resume from `path` or the newest checkpoint; False when there is none. Every rank
        reads the (verified) file and keeps its own shards of the full state dicts."""
        path = broadcast_object(str(path or ckpt.latest_checkpoint(self.ckpt_dir) or ""))
        if not path:
            return False
        payload = ckpt.load_checkpoint(Path(path))
        load_full_state(self.actor, self.actor_opt, payload["policy"], payload["policy_optim"])
        self.actor_sched.load_state_dict(payload["policy_sched"])
        if self.critic is not None:
            load_full_state(self.critic, self.critic_opt, payload["critic"], payload["critic_optim"])
            self.critic_sched.load_state_dict(payload["critic_sched"])
        self.step = payload["step"]
        self.stream.load_state_dict(payload["stream"])
        rngs = payload["rng"]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self._sync_rollout_model()
        return True

    def export(self, out_dir: Path) -> None:
        """The trained policy in HF format (config.json + safetensors) in the dtype the policy
        was handed in (fp32 masters of a bf16 model export as bf16), written by rank 0."""
        state = {k[len("lm."):]: v for k, v in full_model_state(self.actor, self.dist).items()
                 if k.startswith("lm.")}
        if self.dist.is_main:
            from deepretrieval.model.hf_weights import save_hf
            # save_hf takes the config from the model object; the rollout copy is unsharded
            save_hf(self.rollout_lm, out_dir,
                    {k: v.detach().to("cpu", self.export_dtype) for k, v in state.items()})

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False, on_step_end: StepCallback | None = None
            ) -> dict[str, float]:
        cfg = self.cfg
        if resume and not self.load():
            raise ckpt.CheckpointError(f"--resume given but {self.ckpt_dir} holds no checkpoint")
        if not resume and ckpt.latest_checkpoint(self.ckpt_dir) is not None:
            # a fresh run would mix its checkpoints and logs with the old run's
            raise ckpt.CheckpointError(f"{self.run_dir} already holds checkpoints of a run: resume "
                                       "it (--resume) or choose a new run directory")
        log = RunLogger(self.run_dir, enabled=self.dist.is_main, total_steps=cfg.total_steps,
                        start_step=self.step)
        log.write_config({"rl": cfg.to_dict(), "world_size": self.dist.world_size,
                          "device": str(self.dist.device), "bf16": self.bf16,
                          "num_prompts": len(self.prompts)})
        metrics: dict[str, float] = {}
        started = time.monotonic()
        try:
            while self.step < cfg.total_steps:
                metrics = self.train_step()
                log.metrics(self.step, metrics)
                log.rollouts(self.step, [self._rollout_row(s)
                                         for s in self._last_samples[:cfg.log_rollouts]])
                # rank 0's clock decides, so every rank stops after the same step
                out_of_time = cfg.max_minutes > 0 and broadcast_object(
                    time.monotonic() - started >= 60 * cfg.max_minutes)
                if (self.step % cfg.checkpoint_every == 0 or self.step == cfg.total_steps
                        or out_of_time):
                    self.save()
                if self.step % cfg.plot_every == 0:
                    log.plot()
                if on_step_end is not None:
                    on_step_end(self.step, metrics)
                if out_of_time:
                    break
            log.plot()
        finally:
            log.close()
            self.pool.close()
        return metrics

    def _rollout_row(self, s: Sample) -> dict[str, Any]:
        return {"prompt_index": s.prompt_index, "completion": s.completion, "reward": s.reward,
                "details": s.details, "length": len(s.response_ids), "finish": s.finish_reason,
                "meta": s.prompt.meta}


def train(config: RLConfig, policy_model: nn.Module, tokenizer: TokenizerLike, task: Task,
          run_dir: str | Path, resume: bool = False, device: str | None = None,
          export: bool = True, on_step_end: StepCallback | None = None) -> dict[str, float]:
    """Train `policy_model` (model.transformer.Transformer, modified in place: it is the policy)
    on `task` with `config`; everything goes to `run_dir`. Works as one process or under torchrun
    (every rank calls this with the same arguments). Returns the last step's metrics."""
    trainer = Trainer(config, policy_model, tokenizer, task, run_dir, device)
    metrics = trainer.fit(resume=resume, on_step_end=on_step_end)
    if export:
        trainer.export(Path(run_dir) / "export")
    finish(trainer.dist)
    return metrics

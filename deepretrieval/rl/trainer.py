"""The RL training loop under torch.distributed (one process, or torchrun with N); what GRPO and
PPO do differently is rl/algorithms.py.

    from deepretrieval.rl.trainer import train
    metrics = train(rl_config, policy_model, tokenizer, task, "runs/demo", resume=False)

    torchrun --nproc_per_node=N <your entry point that calls train(...)>    # same arguments

One RL step:
  1. draw `prompts_per_step` prompt indices (same on every rank: PromptStream);
  2. lay them out as [mini-batch, rank, prompt]: rank r owns a contiguous slice of every
     mini-batch, so the global mini-batches (and hence every optimiser step) are the same for any
     number of ranks;
  3. generate `group_size` completions per owned prompt with the sampler on the rollout copy of the
     policy, scoring each chunk in the reward pool while the next one is generated; with dynamic
     sampling (GRPO), more rounds of prompts until enough groups have unequal rewards
     (rl/dynamic_sampling.py);
  4. recompute log-probs with the trainer's policy (the ratio's denominator; the largest
     |sampler - trainer| difference is logged as `logprob_diff/max`), the reference's log-probs,
     and the algorithm's values (PPO's critic). GRPO skips the policy's pass over the first
     mini-batch (with one epoch): its first optimiser step runs at the step's starting weights,
     so those rows' old log-probs are the update's own, detached (the ratio is exactly 1, as TRL
     does when it updates once per generation); their statistics come from that forward;
  5. advantages (the algorithm's): GRPO group-normalised per prompt; PPO GAE over token rewards
     (score on the last token, optionally -kl_coef * KL per token), whitened with global
     statistics;
  6. `epochs_per_step` passes over the mini-batches: micro-batches with gradient accumulation,
     every loss normalised by the *global* token / sequence count of the mini-batch (so the sum
     over micro-batches and ranks is the one-process loss), FSDP2 reduce-scatter, clipping, AdamW;
  7. refresh the rollout copy, log, checkpoint.
Each step returns its metrics as one dict (metrics.jsonl's row): loss terms and fractions summed
over micro-batches and ranks by name, rewards and lengths gathered from every rank, timings.

Precision: fp32 master weights. `precision="bf16"` (the default on CUDA) runs forward/backward
under bf16 autocast, with the residual stream in bf16 as in the bf16 copies of the policy that
generate and serve as the reference, and AdamW's fused kernel. The reference model is frozen
(never in an optimiser, no grads) and sharded like the policy. `compile_blocks` runs every
transformer block through torch.compile (inside gradient checkpointing, under FSDP2's hooks);
`keep_head_logits` keeps the LM head's logits for backward. With LoRA (`lora.rank > 0`,
rl/lora.py) only the adapters train, the reference is the policy with its adapters off, and the
rollout copy (always separate then) and the export receive merged weights. Metrics go to
metrics.jsonl and, when asked for, TensorBoard and W&B (rl/trackers.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepretrieval.rl import checkpoint as ckpt
from deepretrieval.rl.algorithms import Metrics, build_algorithm
from deepretrieval.rl.config import RLConfig
from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.distributed import (DistInfo, all_gather_objects, all_reduce_max, all_reduce_sum,
                                          all_reduce_sum_dict, broadcast_object, finish,
                                          full_model_state, init_distributed, shard)
from deepretrieval.rl.dynamic_sampling import select_groups, zero_variance
from deepretrieval.rl.interfaces import Task, TokenizerLike
from deepretrieval.rl.lora import FrozenBase, apply_lora, merge_lora_state
from deepretrieval.rl.losses import aggregate, kl_estimate, policy_loss
from deepretrieval.rl.models import (ResponseModel, compile_blocks, enable_gradient_checkpointing,
                                     export_policy, frozen_copy, use_bf16)
from deepretrieval.rl.optim import build_optimizer, build_scheduler, optimizer_step
from deepretrieval.rl.reward_pool import RewardPool
from deepretrieval.rl.rollout import Batch, Sample, collate, generate_rollouts, render_prompt
from deepretrieval.rl.run_logging import RunLogger
from deepretrieval.rl.trackers import Trackers, check_available
from deepretrieval.rl.train_state import policy_state, restore_policy_state

StepCallback = Callable[[int, dict[str, float]], None]
_clock = time.monotonic                      # rl.max_minutes' clock (a test advances it by hand)


class Trainer:
    def __init__(self, cfg: RLConfig, policy: nn.Module, tokenizer: TokenizerLike, task: Task,
                 run_dir: str | Path, device: str | None = None):
        self.cfg = cfg
        self.dist: DistInfo = init_distributed(device)
        cfg.check_world(self.dist.world_size)
        check_available(cfg.tensorboard, cfg.wandb_project)
        self.tokenizer = tokenizer
        self.task = task
        self.run_dir = Path(run_dir)
        dev = self.dist.device
        self.bf16 = use_bf16(cfg.precision, dev)
        torch.manual_seed(cfg.seed)           # same value-head and adapter init on every rank
        self.export_dtype = next(policy.parameters()).dtype   # what the user handed in
        lm = policy.to(device=dev, dtype=torch.float32)   # fp32 master weights
        lm.requires_grad_(True)                           # loaders may hand out frozen models
        self.lora = cfg.lora.enabled
        # The sampler needs a plain (unsharded, adapter-free) model; one process in fp32 samples
        # from the policy itself, otherwise from a full copy refreshed after every step.
        self.rollout_lm = lm
        if self.dist.distributed or self.bf16 or self.lora:
            self.rollout_lm = frozen_copy(lm).to(torch.bfloat16 if self.bf16 else torch.float32)
        use_reference = cfg.kl_coef > 0
        self.reference = None
        if use_reference and not self.lora:   # frozen: bf16 weights suffice when compute is bf16
            self.reference = self._setup(ResponseModel(frozen_copy(lm).to(
                torch.bfloat16 if self.bf16 else torch.float32)), trained=False)
        self.algo = build_algorithm(cfg, lm, self._setup, self._autocast, tokenizer.pad_token_id,
                                    dev, kl_in_reward=use_reference and cfg.kl_mode == "reward")
        if self.lora:                         # after the copies above: they stay plain
            apply_lora(lm, cfg.lora)
        self.actor = self._setup(ResponseModel(lm, value_head=self.algo.shared_value_head,
                                               keep_logits=cfg.keep_head_logits))
        if use_reference and self.lora:       # the base weights exist once
            self.reference = FrozenBase(self.actor)
        self.actor_opt = build_optimizer(self._actor_param_groups(), cfg.actor_optim)
        self.actor_sched = build_scheduler(self.actor_opt, cfg.actor_optim, cfg.optimizer_steps)
        self.prompts = list(task.prompts())
        self._prompt_ids: dict[int, list[int]] = {}
        self.stream = PromptStream(len(self.prompts), cfg.seed)
        self.pool = RewardPool(task.reward, cfg.reward_workers, cfg.reward_pool)
        # GRPO's advantages need no policy pass, so its first mini-batch takes its old log-probs
        # from the update's own forward (_prepare); PPO's need them (values, KL in the reward),
        # and a second epoch would need them kept
        self.own_first_logprobs = (not self.algo.advantages_read_policy_pass
                                   and cfg.epochs_per_step == 1)
        self.step = 0
        self.train_seconds = 0.0            # training wall time so far, a resumed run's included
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._last_samples: list[Sample] = []

    # ------------------------------------------------------------------ helpers
    def _setup(self, model: ResponseModel, trained: bool = True) -> ResponseModel:
        """Gradient checkpointing (trained models), then per-block compilation, then FSDP2."""
        if trained and self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model.lm)
        if self.cfg.compile_blocks:           # after checkpointing, before sharding: per block
            compile_blocks(model.lm)
        return shard(model, self.dist, list(model.lm.layers))

    def _actor_param_groups(self) -> list[dict]:
        """The policy's parameters; a value head on its trunk (PPO, shared critic) learns at the
        critic's rate."""
        head = self.actor.value_head
        head_ids = set(map(id, head.parameters())) if head is not None else set()
        groups = [{"params": [p for p in self.actor.parameters()
                              if p.requires_grad and id(p) not in head_ids]}]   # LoRA: adapters
        if head is not None:
            groups.append({"params": list(head.parameters()), "lr": self.cfg.critic_optim.lr})
        return groups

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

    # ------------------------------------------------------------------ rollouts
    def _my_prompts(self, indices: list[int]) -> list[tuple[int, int]]:
        """(global position, prompt index) of this rank's prompts: [mini, rank, k] layout."""
        per = self.cfg.mini_batch_prompts // self.dist.world_size
        mine = []
        for j in range(self.cfg.num_mini_batches):
            base = j * self.cfg.mini_batch_prompts + self.dist.rank * per
            mine.extend((pos, indices[pos]) for pos in range(base, base + per))
        return mine

    def _generate(self, offset: int) -> tuple[dict[int, list[Sample]], float, float]:
        """One round: this rank's share of `prompts_per_step` new prompts, generated and scored.
        Returns its groups by global position (+ `offset`, the round's first position), in
        [mini, rank, k] order, and the seconds spent generating and waiting for rewards."""
        cfg = self.cfg
        mine = self._my_prompts(self.stream.next(cfg.prompts_per_step))
        work = [(offset + pos, idx, self._ids(idx), self.prompts[idx]) for pos, idx in mine]
        samples, pending, t_gen = generate_rollouts(
            self.rollout_lm, work, cfg.group_size, cfg.sampling, cfg.rollout_chunk_prompts,
            self.tokenizer.pad_token_id, list(self.tokenizer.stop_token_ids), cfg.seed, self.step,
            self._decode, self.pool)
        t0 = time.perf_counter()
        for chunk, fut in pending:
            result = fut.result()
            for s, r, d in zip(chunk, result.rewards, result.details):
                s.reward, s.details = r, d
        n = cfg.group_size
        groups = {samples[i].position: samples[i:i + n] for i in range(0, len(samples), n)}
        return groups, t_gen, time.perf_counter() - t0

    def _rollouts(self) -> tuple[list[Sample], dict[str, float]]:
        """This rank's samples of the step in [mini, rank, k] order (groups contiguous, rewards
        filled in) and the rollout metrics. With dynamic sampling, rounds of new prompts until
        prompts_per_step groups have unequal rewards (rl/dynamic_sampling.py)."""
        cfg = self.cfg
        P = cfg.prompts_per_step
        rounds = 1 + (cfg.dynamic_sampling_extra_rounds if cfg.dynamic_sampling else 0)
        groups: dict[int, list[Sample]] = {}      # this rank's, by global position
        flags: list[tuple[int, bool, float]] = []  # every rank's (position, zero variance, mean)
        stats = {"time/generate": 0.0, "time/reward": 0.0}
        for r in range(rounds):
            new, t_gen, t_reward = self._generate(r * P)
            stats["time/generate"] += t_gen
            stats["time/reward"] += t_reward
            groups.update(new)
            if cfg.group_size > 1:
                local = [(pos, zero_variance([s.reward for s in g]),
                          float(np.mean([s.reward for s in g]))) for pos, g in new.items()]
                flags += [f for part in all_gather_objects(local) for f in part]
            if sum(not flat for _, flat, _ in flags) >= P:
                break
        if flags:
            stats["groups/zero_variance"] = float(np.mean([flat for _, flat, _ in flags]))
        if not cfg.dynamic_sampling:
            return [s for g in groups.values() for s in g], stats
        chosen, fillers = select_groups([(pos, flat) for pos, flat, _ in flags], P)
        # the chosen groups from every rank (a no-op for one process); slot k of the step's
        # [mini, rank, k] layout takes chosen[k], wherever it was generated
        keep = set(chosen)
        mine = {p: g for p, g in groups.items() if p in keep}
        everyone = {pos: g for part in all_gather_objects(mine) for pos, g in part.items()}
        stats.update({"groups/rounds": float(r + 1), "groups/fillers": float(fillers),
                      "reward/generated_mean": float(np.mean([m for _, _, m in flags]))})
        slots = [slot for slot, _ in self._my_prompts(list(range(P)))]
        return [s for slot in slots for s in everyone[chosen[slot]]], stats

    # ------------------------------------------------------------------ one RL step
    def _mini_batches(self, samples: list[Sample]) -> list[list[Sample]]:
        per_mini = len(samples) // self.cfg.num_mini_batches       # contiguous by construction
        return [samples[j * per_mini:(j + 1) * per_mini] for j in range(self.cfg.num_mini_batches)]

    @torch.no_grad()
    def _prepare(self, samples: list[Sample], pass_stats: "PolicyPassStats") -> None:
        """Old log-probs (trainer recomputation; none for the first mini-batch when
        `own_first_logprobs`), reference log-probs, values."""
        cfg, dev = self.cfg, self.dist.device
        outputs = []                    # (micro-batch, logprobs, ref logprobs, values) on the device
        for j, mini in enumerate(self._mini_batches(samples)):
            policy_pass = j > 0 or not self.own_first_logprobs
            if not policy_pass and self.reference is None:
                continue                                          # nothing to compute for them
            for mb in self._micro_batches(mini):
                b = collate(mb, ("sampler_logprobs",), self.tokenizer.pad_token_id, dev)
                with self._autocast():
                    out = (self.actor(b.input_ids, b.response_start, b.response_mask.shape[1],
                                      cfg.sampling.temperature, entropy=True)
                           if policy_pass else None)
                    ref = (self.reference(b.input_ids, b.response_start, b.response_mask.shape[1],
                                          cfg.sampling.temperature).logprobs
                           if self.reference is not None else None)
                    values = self.algo.values(b, out) if policy_pass else None
                if out is not None:
                    pass_stats.add(out.logprobs, out.entropy, ref, b)
                outputs.append((mb, out.logprobs if out is not None else None, ref,
                                values.float() if values is not None else None))
        # Device-to-host copies only after every micro-batch is queued: a copy waits for the GPU,
        # and the host would otherwise idle the GPU while it launches the next micro-batch.
        for mb, *tensors in outputs:
            old_cpu, ref_cpu, values_cpu = (t.cpu() if t is not None else None for t in tensors)
            for i, s in enumerate(mb):
                r = len(s.response_ids)
                s.old_logprobs = old_cpu[i, :r] if old_cpu is not None else None
                s.ref_logprobs = ref_cpu[i, :r] if ref_cpu is not None else None
                s.values = values_cpu[i, :r] if values_cpu is not None else None

    def _micro_batch(self, b: Batch, denom: torch.Tensor, share: torch.Tensor,
                     pass_stats: "PolicyPassStats | None" = None) -> Metrics:
        """Forward, loss and backward of one micro-batch; its metrics (0-d float64 tensors: loss
        terms as shares of the mini-batch loss, fractions weighted by the token share). With
        `pass_stats` the rows have no old log-probs: the policy is still at the step's starting
        weights, so they are this forward's own (detached), and its statistics go to pass_stats."""
        cfg, W = self.cfg, self.dist.world_size
        mask, f = b.response_mask, b.fields
        with self._autocast():
            out = self.actor(b.input_ids, b.response_start, mask.shape[1],
                             cfg.sampling.temperature,
                             entropy=cfg.entropy_coef > 0 or pass_stats is not None)
        old = f["old_logprobs"] if pass_stats is None else out.logprobs.detach()
        if pass_stats is not None:
            pass_stats.add(out.logprobs.detach(), out.entropy.detach(), f.get("ref_logprobs"), b)
        pl = policy_loss(out.logprobs, old, f["advantages"], mask,
                         cfg.clip_low, cfg.clip_high, cfg.loss_aggregation, denom)
        loss = pl.loss
        metrics = {"loss/policy": pl.loss, "clip_frac": pl.clip_fraction * share,
                   "approx_kl": pl.approx_kl * share}
        if self.reference is not None and cfg.kl_mode == "loss":
            kl = kl_estimate(out.logprobs, f["ref_logprobs"], cfg.kl_estimator)    # [m, R]
            metrics["loss/kl"] = aggregate(kl, mask, cfg.loss_aggregation, denom)
            loss = loss + cfg.kl_coef * metrics["loss/kl"]
        if cfg.entropy_coef:
            metrics["loss/entropy"] = aggregate(out.entropy, mask, cfg.loss_aggregation, denom)
            loss = loss - cfg.entropy_coef * metrics["loss/entropy"]
        value_term, value_metrics = self.algo.actor_terms(b, out, denom, share)
        if value_term is not None:
            loss = loss + value_term
        # FSDP averages gradients over ranks; each rank's loss is already its share of the global
        # mean, so scale by W to get the sum.
        (loss * W).backward()
        value_metrics.update(self.algo.critic_backward(b, denom, share, W))
        return {k: v.detach().double() for k, v in {**metrics, **value_metrics}.items()}

    def _update(self, samples: list[Sample], pass_stats: "PolicyPassStats") -> dict[str, float]:
        """epochs x mini-batches of optimiser steps; returns loss metrics (global means)."""
        cfg, dev = self.cfg, self.dist.device
        minis = self._mini_batches(samples)
        counts = all_reduce_sum(torch.tensor(
            [[sum(len(s.response_ids) for s in mb), len(mb)] for mb in minis],
            dtype=torch.float32, device=dev))                    # [num_mini, 2] global
        fields = (("old_logprobs", "advantages") + (("ref_logprobs",) if self.reference else ())
                  + self.algo.fields)
        # the first optimiser step's rows: no old log-probs yet (see _prepare)
        first_fields = tuple(f for f in fields if f != "old_logprobs") + ("sampler_logprobs",)
        totals: Metrics = {}
        grad_norms = []
        for _ in range(cfg.epochs_per_step):
            for j, mini in enumerate(minis):
                n_tok, n_seq = counts[j, 0], counts[j, 1]
                denom = n_tok if cfg.loss_aggregation == "token" else n_seq
                own = self.own_first_logprobs and j == 0
                part: Metrics = {}
                for mb in self._micro_batches(mini):
                    b = collate(mb, first_fields if own else fields, self.tokenizer.pad_token_id, dev)
                    _accumulate(part, self._micro_batch(b, denom, b.response_mask.sum() / n_tok,
                                                        pass_stats if own else None))
                grad_norms.append(optimizer_step(self.actor, self.actor_opt, self.actor_sched,
                                                 cfg.actor_optim.grad_clip))
                self.algo.optimizer_step()
                _accumulate(totals, all_reduce_sum_dict(part))
        n_updates = cfg.epochs_per_step * cfg.num_mini_batches
        metrics = _to_floats({k: v / n_updates for k, v in totals.items()})
        metrics["grad_norm"] = torch.stack(grad_norms).double().mean().item()   # one sync, at the end
        metrics["lr"] = self.actor_sched.get_last_lr()[0]
        return metrics

    def _sync_rollout_model(self) -> None:
        if self.rollout_lm is self.actor.lm:
            return
        state = merge_lora_state(full_model_state(self.actor, self.dist))
        with torch.no_grad():
            for name, p in self.rollout_lm.state_dict().items():
                p.copy_(state["lm." + name])

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        t_step = time.perf_counter()
        self.step += 1
        samples, stats = self._rollouts()
        t0 = time.perf_counter()
        pass_stats = PolicyPassStats(self.dist.device, cfg.kl_estimator)
        self._prepare(samples, pass_stats)
        self.algo.advantages(samples)
        t_prepare = time.perf_counter() - t0
        stats.update(self._update(samples, pass_stats))
        t_train = time.perf_counter() - t0
        stats.update(pass_stats.finish(sum(len(s.response_ids) for s in samples)))
        t0 = time.perf_counter()
        self._sync_rollout_model()
        t_sync = time.perf_counter() - t0
        stats.update(self._sample_metrics(samples))
        gen_tokens, all_tokens = all_reduce_sum(torch.tensor(
            [sum(len(s.response_ids) for s in samples),
             sum(len(s.response_ids) + len(s.prompt_ids) for s in samples)],
            dtype=torch.float64, device=self.dist.device)).tolist()
        stats.update({"time/train": t_train, "time/prepare": t_prepare, "time/sync": t_sync,
                      "time/step": time.perf_counter() - t_step,
                      "tokens_per_s/generate": gen_tokens / max(stats["time/generate"], 1e-9),
                      "tokens_per_s/train": all_tokens * cfg.epochs_per_step / max(t_train, 1e-9)})
        self._last_samples = samples
        return stats

    def _sample_metrics(self, samples: list[Sample]) -> dict[str, float]:
        """Reward, reward components, lengths of the trained samples: gathered from every rank."""
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
        payload = policy_state(self.actor, self.actor_opt, self.actor_sched, self.stream, self.step,
                               self.cfg.to_dict(), self.dist)
        payload.update(self.algo.state_dict())        # PPO's critic: "critic", "critic_optim", ...
        payload["train_seconds"] = self.train_seconds
        if self.dist.is_main:
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
        self.step = restore_policy_state(payload, self.actor, self.actor_opt, self.actor_sched,
                                         self.stream, self.dist)
        self.algo.load_state_dict(payload)
        self.train_seconds = payload.get("train_seconds", 0.0)   # absent from older checkpoints
        self._sync_rollout_model()
        return True

    def export(self, out_dir: Path) -> None:
        """The trained policy in HF format (config.json + safetensors) in the dtype the policy
        was handed in (fp32 masters of a bf16 model export as bf16), LoRA adapters merged,
        written by rank 0."""
        export_policy(self.actor, self.dist, out_dir, self.export_dtype)

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False, on_step_end: StepCallback | None = None
            ) -> dict[str, float]:
        cfg = self.cfg
        ckpt.check_run_dir(self.run_dir, self.ckpt_dir, resume)
        if resume:
            self.load()
        log = RunLogger(self.run_dir, enabled=self.dist.is_main, total_steps=cfg.total_steps,
                        start_step=self.step)
        run_info = {"rl": cfg.to_dict(), "world_size": self.dist.world_size,
                    "device": str(self.dist.device), "bf16": self.bf16,
                    "num_prompts": len(self.prompts)}
        log.write_config(run_info)
        trackers = Trackers(self.run_dir, cfg.tensorboard, cfg.wandb_project, run_info,
                            start_step=self.step, enabled=self.dist.is_main)
        metrics: dict[str, float] = {}
        started = _clock() - self.train_seconds      # resumed: max_minutes counts the time before
        try:
            while self.step < cfg.total_steps:
                metrics = self.train_step()
                self.train_seconds = _clock() - started
                log.metrics(self.step, metrics)
                trackers.log(self.step, metrics)
                log.rollouts(self.step, [self._rollout_row(s)
                                         for s in self._last_samples[:cfg.log_rollouts]])
                # rank 0's clock decides, so every rank stops after the same step
                out_of_time = cfg.max_minutes > 0 and broadcast_object(
                    self.train_seconds >= 60 * cfg.max_minutes)
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
            trackers.close()
            self.pool.close()
        return metrics

    def _rollout_row(self, s: Sample) -> dict[str, Any]:
        return {"prompt_index": s.prompt_index, "completion": s.completion, "reward": s.reward,
                "details": s.details, "length": len(s.response_ids), "finish": s.finish_reason,
                "meta": s.prompt.meta}


class PolicyPassStats:
    """Token sums of the policy's log-prob passes (the prepare pass, and the update's forward for
    rows it skipped): |trainer - sampler| log-prob difference, KL to the reference, entropy."""

    def __init__(self, device: torch.device, kl_estimator: str):
        self.kl_estimator = kl_estimator
        self.max_diff = torch.zeros((), device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)   # diff, kl, entropy

    def add(self, logprobs: torch.Tensor, entropy: torch.Tensor, ref: torch.Tensor | None,
            b: Batch) -> None:
        """logprobs, entropy, ref [m, R] of batch b's rows (b.fields holds sampler_logprobs)."""
        mask = b.response_mask
        diff = (logprobs - b.fields["sampler_logprobs"]).abs() * mask
        self.max_diff = torch.maximum(self.max_diff, diff.max())
        self.sums[0] += diff.sum()
        self.sums[2] += (entropy * mask).sum()
        if ref is not None:
            self.sums[1] += (kl_estimate(logprobs, ref, self.kl_estimator) * mask).sum()

    def finish(self, tokens: int) -> dict[str, float]:
        """Global means over every rank's `tokens` response tokens (a collective)."""
        total = all_reduce_sum(torch.tensor(float(tokens), dtype=torch.float64,
                                            device=self.sums.device))
        means = all_reduce_sum(self.sums) / total
        return {"logprob_diff/max": all_reduce_max(self.max_diff).item(),
                "logprob_diff/mean": means[0].item(), "kl": means[1].item(),
                "entropy": means[2].item()}


def _accumulate(totals: Metrics, values: Metrics) -> None:
    for k, v in values.items():
        totals[k] = totals[k] + v if k in totals else v


def _to_floats(values: Metrics) -> dict[str, float]:
    """0-d tensors -> floats with one device-to-host copy."""
    keys = list(values)
    return dict(zip(keys, torch.stack([values[k] for k in keys]).tolist())) if keys else {}


def train(config: RLConfig, policy_model: nn.Module, tokenizer: TokenizerLike, task: Task,
          run_dir: str | Path, resume: bool = False, device: str | None = None,
          export: bool = True, on_step_end: StepCallback | None = None) -> dict[str, float]:
    """Train `policy_model` (model.transformer.Transformer, modified in place: it is the policy;
    with LoRA it keeps its adapters, and the export holds the merged weights) on `task` with
    `config`; everything goes to `run_dir`. Works as one process or under torchrun
    (every rank calls this with the same arguments). Returns the last step's metrics."""
    trainer = Trainer(config, policy_model, tokenizer, task, run_dir, device)
    metrics = trainer.fit(resume=resume, on_step_end=on_step_end)
    if export:
        trainer.export(Path(run_dir) / "export")
    finish(trainer.dist)
    return metrics

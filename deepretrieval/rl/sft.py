"""Supervised fine-tuning on chat traces: the cold start before RL, on the RL trainer's machinery
(fp32 master weights, bf16 autocast on CUDA, LoRA, gradient checkpointing, FSDP2 under torchrun,
the same checkpoints and export).

    from deepretrieval.rl.sft import load_traces, sft
    traces = load_traces("traces.jsonl", tokenizer, max_tokens=2048)
    metrics = sft(cfg.sft, model, tokenizer, traces, "runs/sft")   # metrics.jsonl, checkpoints/, export/

    deepretrieval sft --config configs/spider.toml --data traces.jsonl --run-dir runs/sft
    deepretrieval train --config configs/spider.toml model.name=runs/sft/export    # RL from it

A trace is one JSON line {"messages": [{"role": "system" | "user" | "assistant", "content": str},
...]} whose last message is the assistant's answer. The prompt (the messages before it, rendered
by the model's chat template with the assistant turn opened) and the answer (the rest of the
rendered conversation up to and including the end-of-turn token, which must be a stop token) are
tokenized separately, exactly as the RL trainer sees a prompt and a completion. The loss is the
answer tokens' negative log-likelihood summed over the batch and divided by the batch's answer
tokens on all ranks, so every supervised token weighs the same, whatever the micro-batching or
number of ranks. Prompt tokens are context only.

Rows are packed as RL's rollouts (rl/rollout.collate): [prompt | answer | padding], padding only
at the end, so the forward needs no attention mask, and the LM head runs on the answer positions
only (rl/models.ResponseModel). Step s takes the next `batch_size` traces of a seeded shuffle
(rl/data.PromptStream, epoch after epoch); rank r takes a contiguous share of them. Checkpoints
hold what RL's hold (rl/train_state.py), so `deepretrieval eval --checkpoint runs/sft`, `export`
and `sft --resume` work on an SFT run as on an RL run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepretrieval.model.chat_template import render_chat
from deepretrieval.rl import checkpoint as ckpt
from deepretrieval.rl.config import SFTConfig
from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.distributed import (all_reduce_sum, broadcast_object, finish, init_distributed,
                                          shard)
from deepretrieval.rl.interfaces import TokenizerLike
from deepretrieval.rl.lora import apply_lora
from deepretrieval.rl.models import ResponseModel, enable_gradient_checkpointing, export_policy, use_bf16
from deepretrieval.rl.optim import build_optimizer, build_scheduler, optimizer_step
from deepretrieval.rl.rollout import collate
from deepretrieval.rl.run_logging import RunLogger
from deepretrieval.rl.trackers import Trackers, check_available
from deepretrieval.rl.train_state import policy_state, restore_policy_state


@dataclass(frozen=True)
class Trace:
    prompt_ids: list[int]       # the conversation before the answer, assistant turn opened
    response_ids: list[int]     # the answer, ending in a stop token (the supervised tokens)


def encode_trace(messages: list[dict], tokenizer: TokenizerLike, max_tokens: int) -> Trace:
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        raise ValueError("the tokenizer has no chat template: set model.chat_template")
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise ValueError("a trace needs at least one message before a final assistant message")
    prompt = render_chat(messages[:-1], template, add_generation_prompt=True)
    full = render_chat(messages, template, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ValueError(f"the {template!r} template renders the earlier turns differently once the "
                         "answer follows; give the reasoning of earlier assistant turns inline")
    answer = full[len(prompt):].rstrip("\n")          # the template's newline after the turn ends
    trace = Trace(tokenizer.encode(prompt), tokenizer.encode(answer))
    if not trace.response_ids or trace.response_ids[-1] not in tokenizer.stop_token_ids:
        raise ValueError(f"the {template!r} template ends the answer with {answer[-12:]!r}, not a stop "
                         "token of the tokenizer: the model would never learn to stop")
    if len(trace.prompt_ids) + len(trace.response_ids) > max_tokens:
        raise ValueError(f"{len(trace.prompt_ids) + len(trace.response_ids)} tokens > sft.max_tokens "
                         f"= {max_tokens} (raise it, or shorten the trace)")
    return trace


def load_traces(path: str | Path, tokenizer: TokenizerLike, max_tokens: int) -> list[Trace]:
    """Every line of a JSONL file as a Trace; a bad line is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file {path} does not exist")
    traces = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                raise ValueError('expected {"messages": [{"role": ..., "content": ...}, ...]}')
            traces.append(encode_trace(row["messages"], tokenizer, max_tokens))
        except ValueError as exc:          # json.JSONDecodeError included
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not traces:
        raise ValueError(f"{path} holds no traces")
    return traces


class SFTTrainer:
    def __init__(self, cfg: SFTConfig, policy: nn.Module, tokenizer: TokenizerLike,
                 traces: list[Trace], run_dir: str | Path, device: str | None = None):
        self.cfg, self.tokenizer, self.traces = cfg, tokenizer, traces
        self.dist = init_distributed(device)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"sft.batch_size={cfg.batch_size} must be a multiple of the number of "
                             f"processes ({self.dist.world_size})")
        check_available(cfg.tensorboard, cfg.wandb_project)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        dev = self.dist.device
        self.bf16 = use_bf16(cfg.precision, dev)
        torch.manual_seed(cfg.seed)                       # same adapter init on every rank
        self.export_dtype = next(policy.parameters()).dtype
        lm = policy.to(device=dev, dtype=torch.float32)   # fp32 master weights
        lm.requires_grad_(True)
        if cfg.lora.enabled:
            apply_lora(lm, cfg.lora)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(lm)
        self.actor = shard(ResponseModel(lm), self.dist, list(lm.layers))
        self.opt = build_optimizer([p for p in self.actor.parameters() if p.requires_grad], cfg.optim)
        self.total_steps = cfg.total_steps(len(traces))
        self.sched = build_scheduler(self.opt, cfg.optim, self.total_steps)
        self.stream = PromptStream(len(traces), cfg.seed)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        cfg, dev, W = self.cfg, self.dist.device, self.dist.world_size
        t0 = time.perf_counter()
        self.step += 1
        batch = self.stream.next(cfg.batch_size)          # the same on every rank
        per = cfg.batch_size // W
        mine = [self.traces[i] for i in batch[self.dist.rank * per:(self.dist.rank + 1) * per]]
        tokens = all_reduce_sum(torch.tensor(float(sum(len(t.response_ids) for t in mine)), device=dev))
        nll = torch.zeros((), dtype=torch.float64, device=dev)
        for k in range(0, len(mine), cfg.micro_batch_size):
            b = collate(mine[k:k + cfg.micro_batch_size], (), self.tokenizer.pad_token_id, dev)
            mask = b.response_mask                                           # [m, R]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
                logprobs = self.actor(b.input_ids, b.response_start, mask.shape[1]).logprobs   # [m, R]
            loss = -(logprobs * mask).sum() / tokens      # this micro-batch's share of the mean
            (loss * W).backward()                         # FSDP averages over ranks
            nll += loss.detach().double()
        grad_norm = optimizer_step(self.actor, self.opt, self.sched, cfg.optim.grad_clip)
        loss, grad_norm, tokens = torch.stack([all_reduce_sum(nll), grad_norm.double(),
                                               tokens.double()]).tolist()
        elapsed = time.perf_counter() - t0
        return {"loss": loss, "grad_norm": grad_norm, "lr": self.sched.get_last_lr()[0],
                "tokens": tokens, "epoch": self.stream.epoch + self.stream.position / len(self.traces),
                "time/step": elapsed, "tokens_per_s/train": tokens / max(elapsed, 1e-9)}

    def save(self) -> None:
        payload = policy_state(self.actor, self.opt, self.sched, self.stream, self.step,
                               self.cfg.to_dict(), self.dist)
        if self.dist.is_main:
            ckpt.save_checkpoint(self.ckpt_dir, self.step, payload, self.cfg.keep_checkpoints)
        if self.dist.distributed:
            torch.distributed.barrier()

    def load(self) -> bool:
        path = broadcast_object(str(ckpt.latest_checkpoint(self.ckpt_dir) or ""))
        if not path:
            return False
        self.step = restore_policy_state(ckpt.load_checkpoint(Path(path)), self.actor, self.opt,
                                         self.sched, self.stream, self.dist)
        return True

    def export(self, out_dir: Path) -> None:
        export_policy(self.actor, self.dist, out_dir, self.export_dtype)

    def fit(self, resume: bool = False) -> dict[str, float]:
        cfg = self.cfg
        ckpt.check_run_dir(self.run_dir, self.ckpt_dir, resume)
        if resume:
            self.load()
        log = RunLogger(self.run_dir, enabled=self.dist.is_main, total_steps=self.total_steps,
                        start_step=self.step, desc="sft")
        info = {"sft": cfg.to_dict(), "world_size": self.dist.world_size,
                "device": str(self.dist.device), "bf16": self.bf16, "num_traces": len(self.traces), "total_steps": self.total_steps}
        log.write_config(info)
        trackers = Trackers(self.run_dir, cfg.tensorboard, cfg.wandb_project, info,
                            start_step=self.step, enabled=self.dist.is_main)
        metrics: dict[str, float] = {}
        try:
            while self.step < self.total_steps:
                metrics = self.train_step()
                log.metrics(self.step, metrics)
                trackers.log(self.step, metrics)
                if ((cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                        or self.step == self.total_steps):
                    self.save()
                if self.step % cfg.plot_every == 0:
                    log.plot()
            log.plot()
        finally:
            log.close()
            trackers.close()
        return metrics


def sft(cfg: SFTConfig, policy_model: nn.Module, tokenizer: TokenizerLike, traces: list[Trace],
        run_dir: str | Path, resume: bool = False, device: str | None = None,
        export: bool = True) -> dict[str, float]:
    """Fine-tune `policy_model` (modified in place) on `traces`; checkpoints and the export
    (run_dir/export, HF format, LoRA merged) go to `run_dir`. One process or under torchrun
    (every rank calls this with the same arguments). Returns the last step's metrics."""
    trainer = SFTTrainer(cfg, policy_model, tokenizer, traces, run_dir, device)
    metrics = trainer.fit(resume=resume)
    if export:
        trainer.export(Path(run_dir) / "export")
    finish(trainer.dist)
    return metrics

"""AdamW and its learning-rate schedule (linear warmup, then constant or cosine), and one step.

    opt = build_optimizer(model.parameters(), cfg.actor_optim)
    sched = build_scheduler(opt, cfg.actor_optim, total_optimizer_steps)
    grad_norm = optimizer_step(model, opt, sched, cfg.actor_optim.grad_clip)   # 0-d tensor

The schedule is a LambdaLR of a picklable callable object, so `scheduler.state_dict()` carries
everything a resumed run needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from deepretrieval.rl.config import OptimConfig


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: OptimConfig
                    ) -> torch.optim.AdamW:
    params = list(params)
    first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
    # CPU: the per-parameter loop, bit-identical whether a parameter is a plain tensor (one
    # process) or a DTensor shard (FSDP), which the 1-vs-N test relies on. CUDA: the fused kernel,
    # one pass over each parameter's four tensors (hundreds of parameters; the multi-tensor
    # default makes several passes, and one launch per parameter would cost real time).
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay,
                             foreach=False if first.device.type == "cpu" else None,
                             fused=True if first.device.type == "cuda" else None)


@dataclass(frozen=True)
class WarmupSchedule:
    """lr multiplier at optimiser step s: linear warmup over `warmup` steps, then constant or a
    cosine from 1 to `min_ratio` at `total` steps."""
    warmup: int
    total: int
    kind: str
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    fn = WarmupSchedule(cfg.warmup_steps, total_steps, cfg.schedule, cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer,
                   sched: torch.optim.lr_scheduler.LRScheduler, clip: float | None) -> torch.Tensor:
    """Clip, step, zero the grads; returns the grad norm before clipping as a 0-d tensor (a float
    here would make the host wait for the GPU after every mini-batch)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
    if hasattr(norm, "full_tensor"):            # a DTensor under FSDP2
        norm = norm.full_tensor()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return norm.detach().float()

"""What a trainer's checkpoint holds for its policy, shared by RL (rl/trainer.py) and SFT
(rl/sft.py): the policy's full state dict, its optimiser and schedule, the data cursor, the step,
every rank's RNG state, the config and the world size.

    payload = policy_state(actor, opt, sched, stream, step, cfg.to_dict(), dist)   # every rank
    if dist.is_main:
        ckpt.save_checkpoint(root, step, {**payload, **extra}, keep)
    step = restore_policy_state(ckpt.load_checkpoint(path), actor, opt, sched, stream, dist)

Keys: step, stream, rng (a list, one state per rank), config, world_size, policy (`lm.<param>`,
what deepretrieval.policy.load_policy reads; a LoRA run's adapters included), policy_optim,
policy_sched. State dicts are full (unsharded), so a checkpoint written by N ranks resumes on M;
a rank beyond the writer's count takes rank 0's RNG state.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.distributed import DistInfo, all_gather_objects, full_state, load_full_state


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


def policy_state(actor: torch.nn.Module, opt: torch.optim.Optimizer, sched, stream: PromptStream,
                 step: int, config: dict[str, Any], dist: DistInfo) -> dict[str, Any]:
    """A collective (every rank calls it); the returned dict is complete on rank 0 only."""
    policy_sd, policy_opt = full_state(actor, opt)
    return {"step": step, "stream": stream.state_dict(), "rng": all_gather_objects(rng_state()),
            "config": config, "world_size": dist.world_size, "policy": policy_sd,
            "policy_optim": policy_opt, "policy_sched": sched.state_dict()}


def restore_policy_state(payload: dict[str, Any], actor: torch.nn.Module, opt: torch.optim.Optimizer,
                         sched, stream: PromptStream, dist: DistInfo) -> int:
    """Every rank passes the loaded payload and keeps its own shards; returns the step."""
    load_full_state(actor, opt, payload["policy"], payload["policy_optim"])
    sched.load_state_dict(payload["policy_sched"])
    stream.load_state_dict(payload["stream"])
    rngs = payload["rng"]
    set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
    return payload["step"]

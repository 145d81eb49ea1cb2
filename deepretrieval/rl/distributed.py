"""torch.distributed plumbing for rl/: process group, FSDP2 sharding, collectives, state dicts.

    dist_info = init_distributed()          # reads torchrun's env; single process when absent
    model = shard(model, dist_info)         # FSDP2 fully_shard per block + root (no-op for 1 rank)
    total = all_reduce_sum(t)               # identity for 1 rank
    sums = all_reduce_sum_dict({"loss": a, "tokens": b})   # one collective for named scalars
    finish(dist_info)                       # barrier, no destroy (see below)

Backends: NCCL on CUDA, gloo on CPU, so every distributed code path runs in CPU tests
(`torchrun --nproc_per_node=2 ...`). With torch 2.13 CPU, `destroy_process_group()` under gloo
aborts the process at exit about one run in four ("terminate called without an active
exception"), while ending with a barrier and no destroy is clean; so `finish` does exactly that
and the process group is torn down with the process.

State dicts go through torch.distributed.checkpoint.state_dict with full (unsharded, FQN-keyed)
tensors, for one process as for many: a checkpoint written by N ranks resumes on M.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                     set_state_dict)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    device: "cuda", "cpu" or None (= CUDA when available). Without WORLD_SIZE > 1 this is a
    single process and no group is created.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(rank, world, local_rank, dev)


def finish(info: DistInfo) -> None:
    """End of a run: wait for every rank, and do not destroy the group (see module docstring)."""
    if info.distributed:
        dist.barrier()


def shard(model: nn.Module, info: DistInfo, blocks: list[nn.Module]) -> nn.Module:
    """FSDP2: one `fully_shard` unit per transformer block, then the root (embeddings, final
    norm, heads). Parameters become DTensors sharded on dim 0 over all ranks."""
    if not info.distributed:
        return model
    from torch.distributed.fsdp import fully_shard
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    """Reduce over ranks into a new tensor; identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    out = t.clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor; identity when not distributed)."""
    return _all_reduce(t, dist.ReduceOp.SUM)


def all_reduce_sum_dict(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum every 0-d tensor of `values` over ranks in one collective (every rank holds the same
    keys; they travel stacked in sorted key order)."""
    keys = sorted(values)
    if not keys:
        return {}
    return dict(zip(keys, all_reduce_sum(torch.stack([values[k] for k in keys])).unbind()))


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Max over ranks (returns a new tensor; identity when not distributed)."""
    return _all_reduce(t, dist.ReduceOp.MAX)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full model and optimiser state dicts on CPU (a collective: call on every rank; with several
    ranks only rank 0 gets the tensors, the others get empty dicts)."""
    return get_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                    model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> None:
    """Inverse of `full_state`: every rank passes the full dicts and keeps its own shards.
    (broadcast_from_rank0 would spare the other ranks the file read, but with torch 2.13 + gloo
    its optimiser path deadlocks.)"""
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


def full_model_state(model: nn.Module, info: DistInfo) -> dict[str, torch.Tensor]:
    """Unsharded parameters on every rank, on the model's device (e.g. to refresh the rollout
    copy of the policy); a plain state_dict for one process."""
    if not info.distributed:
        return model.state_dict()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
            for k, v in model.state_dict().items()}

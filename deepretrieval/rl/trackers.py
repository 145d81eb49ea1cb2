"""Experiment trackers fed the scalars of metrics.jsonl: TensorBoard event files beside it, and
a Weights & Biases run when one is asked for.

    check_available(tensorboard=True, wandb_project=None)      # every rank, before any work
    trackers = Trackers(run_dir, tensorboard=True, wandb_project=None, config=cfg.to_dict(),
                        start_step=0, enabled=(rank == 0))
    trackers.log(step, metrics)            # the dict metrics.jsonl's row is written from
    trackers.close()

    tensorboard --logdir runs/             # one run per run directory

Both are optional packages: `pip install "deepretrieval[tensorboard]"` (torch.utils.tensorboard
writes through it) and `pip install wandb`. Asking for one that is missing is an ImportError
saying what to install, raised by `check_available` on every rank before the run starts.
TensorBoard writes events.out.tfevents.* into the run directory, one scalar per numeric key
(float32, as TensorBoard stores scalars) at global step = the RL or SFT step. On resume from
step s, the events the killed run wrote after s are purged (SummaryWriter's purge_step), as
RunLogger drops those rows from metrics.jsonl. W&B gets wandb.init(project, dir=run_dir,
name=<run directory name>, config) and wandb.log(metrics, step=step); a resumed run starts a new
W&B run with the same name.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def check_available(tensorboard: bool, wandb_project: str | None) -> None:
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ImportError("tensorboard = true needs the tensorboard package: pip install "
                          "'deepretrieval[tensorboard]' (or set tensorboard = false)")
    if wandb_project and importlib.util.find_spec("wandb") is None:
        raise ImportError(f"wandb_project = {wandb_project!r} needs the wandb package: pip install "
                          "wandb (or leave wandb_project unset)")


class Trackers:
    def __init__(self, run_dir: str | Path, tensorboard: bool, wandb_project: str | None,
                 config: dict[str, Any], start_step: int = 0, enabled: bool = True):
        self._tb = self._wandb = None
        if not enabled:
            return
        check_available(tensorboard, wandb_project)
        run_dir = Path(run_dir)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(run_dir), purge_step=start_step + 1 if start_step else None)
        if wandb_project:
            import wandb
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), name=run_dir.name,
                                     config=config)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

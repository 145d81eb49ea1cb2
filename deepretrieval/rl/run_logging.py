"""What a run writes beside its checkpoints: runs/<name>/{config.json, metrics.jsonl,
rollouts.jsonl, curves.png}, and a tqdm bar.

    log = RunLogger(run_dir, enabled=(rank == 0), total_steps=100, start_step=0)
    log.write_config(resolved_config_dict)
    log.metrics(step, {"reward/mean": 0.3, ...}); log.rollouts(step, [{"prompt":..., ...}])
    log.plot(); log.close()

Only rank 0 writes (enabled=False makes every method a no-op). On resume from step s, rows of
metrics.jsonl / rollouts.jsonl with step > s (written by the killed run after its last
checkpoint) are dropped, so the files describe exactly one history.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"
CONFIG = "config.json"
CURVES = "curves.png"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, total_steps: int = 0,
                 start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, ROLLOUTS):
            kept = [r for r in read_jsonl(self.run_dir / name) if r["step"] <= start_step]
            (self.run_dir / name).write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._bar = tqdm(total=total_steps, initial=start_step, desc="rl", dynamic_ncols=True)

    def write_config(self, config: dict[str, Any]) -> None:
        if self.enabled:
            (self.run_dir / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with (self.run_dir / METRICS).open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        self._bar.update(1)
        self._bar.set_postfix({k: f"{values[k]:.3g}" for k in ("reward/mean", "loss/policy", "kl")
                               if k in values})

    def rollouts(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with (self.run_dir / ROLLOUTS).open("a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}, default=str) + "\n")

    def plot(self) -> Path | None:
        """One panel per numeric metric (time/* together), written to curves.png."""
        if not self.enabled:
            return None
        rows = read_jsonl(self.run_dir / METRICS)
        if not rows:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in rows[-1] if k != "step" and isinstance(rows[-1][k], (int, float))
                and not k.startswith("time/")]
        times = [k for k in rows[-1] if k.startswith("time/")]
        panels = keys + (["time"] if times else [])
        cols = min(4, len(panels))
        nrows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes.flat, panels):
            for k in (times if key == "time" else [key]):
                ax.plot(steps, [r.get(k, float("nan")) for r in rows], label=k)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            if key == "time":
                ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        out = self.run_dir / CURVES
        fig.savefig(out, dpi=80)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

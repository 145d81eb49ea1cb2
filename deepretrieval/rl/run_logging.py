"""What a run writes beside its checkpoints: runs/<name>/{config.json, metrics.jsonl,
rollouts.jsonl, curves.png}, and a tqdm bar.

    log = RunLogger(run_dir, enabled=(rank == 0), total_steps=100, start_step=0)
    log.write_config(resolved_config_dict)
    log.metrics(step, {"reward/mean": 0.3, ...}); log.rollouts(step, [{"prompt":..., ...}])
    log.plot(); log.close()

Only rank 0 writes (enabled=False makes every method a no-op). On resume from step s, rows of
metrics.jsonl / rollouts.jsonl with step > s (written by the killed run after its last
checkpoint) are dropped, so the files describe exactly one history.

A process killed mid-write leaves an unfinished last line. `read_jsonl` skips it (it was never a
row) and `trim_jsonl`, which resume uses, removes it with a warning; a bad line anywhere else is
damage, not a crash, and is an error naming the file and line.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"
CONFIG = "config.json"
CURVES = "curves.png"


def _rows_and_torn_tail(path: Path) -> tuple[list[dict[str, Any]], bytes]:
    """The rows of a jsonl file, and its unfinished last line (b"" if none): one without a
    newline that is not JSON, what a write cut short by a crash leaves."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    tail = lines.pop()                  # b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path} line {number} is not JSON ({exc}); only an unfinished last "
                                 "line comes from a crash: fix or delete that line") from None
    if tail.strip():
        try:
            rows.append(json.loads(tail))
            tail = b""
        except ValueError:
            pass
    return rows, tail


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a jsonl file ([] when it does not exist), without an unfinished last line."""
    return _rows_and_torn_tail(Path(path))[0]


def trim_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrites `path` (atomically) with only the rows `keep` accepts and without an unfinished
    last line (logged); returns how many rows were dropped."""
    path = Path(path)
    rows, torn = _rows_and_torn_tail(path)
    if torn:
        log.warning("%s: dropped its unfinished last line (%d bytes, written when the run was "
                    "killed): %r", path, len(torn), torn[:60])
    kept = [r for r in rows if keep(r)]
    if torn or len(kept) < len(rows):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return len(rows) - len(kept)


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, total_steps: int = 0,
                 start_step: int = 0, desc: str = "rl"):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, ROLLOUTS):
            dropped = trim_jsonl(self.run_dir / name, lambda r: r["step"] <= start_step)
            if dropped and start_step:
                log.info("%s: dropped %d rows after step %d, the checkpoint resumed from",
                         self.run_dir / name, dropped, start_step)
            (self.run_dir / name).touch()
        self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True)

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

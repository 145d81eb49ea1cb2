"""Append one benchmark result as a JSON line to bench/results/<name>.jsonl.

Every benchmark calls `append_result(name, record)`; the line also records when, where (host,
device) and on which commit it was measured, so numbers from different machines never mix; a
commit with "+uncommitted" was measured with changes to the code (deepretrieval/, bench/) beyond it.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=RESULTS_DIR.parent, capture_output=True, text=True,
                          timeout=5).stdout.strip()


def _git_commit() -> str | None:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", "../deepretrieval",
                       ".", ":(exclude)results")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+uncommitted" if changed else "")) or None


def device_name() -> str:
    """'cuda:<GPU name>' when a GPU is used, else 'cpu:<processor>'."""
    try:
        import torch
        if torch.cuda.is_available():
            return "cuda:" + torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu:" + (platform.processor() or platform.machine())


def append_result(name: str, record: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    line = {
        "bench": name,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": device_name(),
        "commit": _git_commit(),
        **record,
    }
    path = RESULTS_DIR / f"{name}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"[bench] appended to {path}: {json.dumps(record)}")
    return path

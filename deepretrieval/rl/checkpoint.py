"""Atomic, verified checkpoints: <run_dir>/checkpoints/step_00000012/{state.pt, manifest.json}.

    path = save_checkpoint(root, step, payload, keep=2)    # rank 0 only; payload picklable
    path = latest_checkpoint(root)                         # None when there is none
    payload = load_checkpoint(path)                        # CheckpointError when corrupt/partial

Writing: everything goes to a hidden temporary directory, every file and the directory are
fsync'ed, then one `rename` publishes it, so a crash at any moment leaves either the old set of
checkpoints or the old set plus a complete new one. Older checkpoints are pruned only after the new
one is published, and a partial temporary directory (a killed writer) is never listed, and is
removed by the next save. The manifest records each file's size and sha256; loading verifies
them, so a truncated or altered checkpoint is an error naming the file, never silent garbage.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_PREFIX = "step_"
_STATE = "state.pt"
_MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted (missing, partial, corrupt, wrong format)."""


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_step(path: Path) -> int:
    """The step a published checkpoint directory holds (from its name)."""
    return int(Path(path).name[len(_PREFIX):])


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoints, oldest first (temporary directories are not listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)
            and p.name[len(_PREFIX):].isdigit()]
    return sorted(dirs, key=checkpoint_step)


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def check_run_dir(run_dir: Path, root: Path, resume: bool) -> None:
    """--resume needs a checkpoint under `root`; a new run needs a folder without one (it would mix
    its checkpoints and logs with the other run's). Checked before anything is loaded or written."""
    found = latest_checkpoint(root)
    if resume and found is None:
        raise CheckpointError(f"--resume given but {root} holds no checkpoint; run without --resume "
                              "to start a new run")
    if not resume and found is not None:
        raise CheckpointError(f"{run_dir} already holds checkpoints of a run (newest {found.name}): "
                              "continue it with --resume, or choose a new run directory")


def save_checkpoint(root: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{_PREFIX}*.tmp-*"):        # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    state = tmp / _STATE
    torch.save(payload, state)
    _fsync_file(state)
    manifest = {"format_version": FORMAT_VERSION, "step": step,
                "files": {_STATE: {"bytes": state.stat().st_size, "sha256": _sha256(state)}}}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync_file(tmp / _MANIFEST)
    _fsync_dir(tmp)
    if final.exists():                                   # re-saving a step (e.g. after resume)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify the manifest, sizes and checksums, then load. Raises CheckpointError saying what is
    wrong and which older checkpoint is still intact."""
    path = Path(path)

    def fail(why: str) -> CheckpointError:
        good = [p for p in list_checkpoints(path.parent) if p != path and _is_intact(p)]
        hint = (f"the previous good checkpoint is {good[-1]}; delete {path} to resume from it"
                if good else "no other intact checkpoint exists; start the run afresh")
        return CheckpointError(f"checkpoint {path} is unusable: {why}; {hint}")

    manifest_path = path / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise fail(f"cannot read {_MANIFEST} ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise fail(f"format_version {manifest.get('format_version')} != {FORMAT_VERSION}")
    problem = _verify_files(path, manifest)
    if problem:
        raise fail(problem)
    try:
        return torch.load(path / _STATE, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise fail(f"{_STATE} does not load ({type(e).__name__}: {e})") from None


def _verify_files(path: Path, manifest: dict) -> str | None:
    for name, meta in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {meta['bytes']} (partial write?)"
        if _sha256(f) != meta["sha256"]:
            return f"{name} does not match its sha256 in the manifest (corrupted)"
    return None if manifest.get("files") else "the manifest lists no files"


def _is_intact(path: Path) -> bool:
    try:
        return _verify_files(path, json.loads((path / _MANIFEST).read_text())) is None
    except (OSError, ValueError, KeyError):
        return False

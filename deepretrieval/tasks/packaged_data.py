"""Datasets that ship inside the package, unpacked on first use: BEIR SciFact and the Spider dev set.

    from deepretrieval.tasks.packaged_data import packaged_dataset
    folder = packaged_dataset("scifact")   # BEIR folder: corpus.jsonl, queries.jsonl, qrels/*.tsv
    folder = packaged_dataset("spider")    # dev.json, tables.json, database/<db_id>/<db_id>.sqlite
    # -> ~/.cache/deepretrieval/data/<name> (or $DEEPRETRIEVAL_CACHE/data/<name>)

In configs, `task.data = "builtin:scifact"` (or "builtin:spider") names the same folder.
deepretrieval/tasks/data/<name>/ holds gzip files written by scripts/pack_dataset.py, a
MANIFEST.json with the sha256 of each decompressed file (the public release's bytes), and the
licence and provenance (DATA_LICENSE.md, SOURCE.md). Unpacking checks every hash, so a damaged
install is an error that says what to do, never silently wrong data; a folder unpacked before and
still intact is reused.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from deepretrieval.model.cache_dir import cache_root

PACKAGED = Path(__file__).resolve().parent / "data"
PREFIX = "builtin:"


def available() -> list[str]:
    return sorted(p.parent.name for p in PACKAGED.glob("*/MANIFEST.json"))


def default_cache_dir(name: str) -> Path:
    return cache_root() / "data" / name


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def packaged_dataset(name: str, dest: str | Path | None = None) -> Path:
    """Unpack (once) and return the folder of the built-in dataset `name`."""
    source_dir = PACKAGED / name
    manifest_file = source_dir / "MANIFEST.json"
    if not manifest_file.is_file():
        raise SystemExit(f"no built-in dataset {name!r} (built-in: {', '.join(available()) or 'none'}; "
                         f"{manifest_file} is missing): reinstall the package")
    dest = Path(dest) if dest is not None else default_cache_dir(name)
    for member, entry in json.loads(manifest_file.read_text()).items():
        target = dest / member
        if _sha256(target) == entry["sha256"]:
            continue
        packed = source_dir / entry["file"]
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError) as exc:
            raise SystemExit(f"built-in data file {packed} is damaged ({exc}); reinstall the package") from exc
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"built-in data file {packed} does not match its MANIFEST.json; reinstall the package")
        target.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name of this process's own, so processes unpacking at once do not collide
        tmp = target.with_suffix(f"{target.suffix}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return dest


def resolve_data_path(spec: str) -> str:
    """A config's `data` value as a folder path: "builtin:NAME" unpacks the built-in dataset."""
    return str(packaged_dataset(spec[len(PREFIX):])) if spec.startswith(PREFIX) else spec

"""The dataset the project ships for `deepretrieval demo`: BEIR SciFact, unpacked on first use.

    from tasks.demo_data import demo_beir_folder
    folder = demo_beir_folder()          # a BEIR folder: corpus.jsonl, queries.jsonl, qrels/*.tsv
    # -> ~/.cache/deepretrieval/scifact-demo (or $DEEPRETRIEVAL_CACHE/scifact-demo)

tasks/data/scifact/ holds the gzip files written by scripts/make_demo_data.py and a MANIFEST.json
with the sha256 of each decompressed file (they are the BEIR release's). Unpacking checks every
hash, so a damaged install is an error that says what to do, never silently wrong data; a folder
unpacked before and still intact is reused. Licence and credit: tasks/data/scifact/DATA_LICENSE.md
(SciFact: CC BY 4.0 claims, ODC-By abstracts; BEIR lists it CC BY-NC 2.0 — non-commercial use).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from model.cache_dir import cache_root

PACKAGED = Path(__file__).resolve().parent / "data" / "scifact"


def default_cache_dir() -> Path:
    return cache_root() / "scifact-demo"


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def demo_beir_folder(dest: str | Path | None = None) -> Path:
    """Unpack (once) and return the demo BEIR folder."""
    dest = Path(dest) if dest is not None else default_cache_dir()
    manifest_file = PACKAGED / "MANIFEST.json"
    if not manifest_file.is_file():
        raise SystemExit(f"the demo data is missing ({manifest_file}); reinstall the package or run "
                         "python scripts/make_demo_data.py")
    manifest = json.loads(manifest_file.read_text())
    for name, entry in manifest.items():
        target = dest / name
        if _sha256(target) == entry["sha256"]:
            continue
        source = PACKAGED / entry["file"]
        try:
            data = gzip.decompress(source.read_bytes())
        except (OSError, EOFError) as exc:
            raise SystemExit(f"demo data file {source} is damaged ({exc}); reinstall the package") from exc
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"demo data file {source} does not match MANIFEST.json; reinstall the package")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return dest

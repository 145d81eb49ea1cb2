"""Pack a dataset folder into deepretrieval/tasks/data/<name>/, the built-in datasets of the package.

    python scripts/pack_dataset.py --source DIR --name scifact     # BEIR SciFact release
    python scripts/pack_dataset.py --source DIR --name spider      # Spider 1.0 dev (json + sqlite)

Every file of the source folder is shipped byte-identical once decompressed, as gzip (level 9,
mtime 0, no file name: the output bytes depend only on the input bytes, so re-running the script
reproduces the committed files), with MANIFEST.json holding the sha256 of every decompressed file.
The source folder's SOURCE.md (provenance, with the public release's sha256 of every file) is
copied beside them, and every file's hash must appear in it: a modified copy is refused.
We ship SciFact's full corpus rather than a subset because BM25's NDCG@10 on SciFact test is a
published number (0.665 BEIR, ~0.68 flat indexes) that the demo's raw-query baseline can be
checked against, which a sampled corpus would break.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = "SOURCE.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with the files and SOURCE.md")
    parser.add_argument("--name", required=True, help="built-in name: deepretrieval/tasks/data/<name>")
    args = parser.parse_args(argv)
    out = ROOT / "deepretrieval" / "tasks" / "data" / args.name
    provenance = (args.source / PROVENANCE).read_text()
    manifest = {}
    for path in sorted(p for p in args.source.rglob("*") if p.is_file() and p.name != PROVENANCE):
        name = path.relative_to(args.source).as_posix()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in provenance:
            raise SystemExit(f"{path}: sha256 {digest} is not listed in {args.source / PROVENANCE}")
        target = out / (name + ".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        manifest[name] = {"sha256": digest, "bytes": len(data), "file": name + ".gz"}
        print(f"{target.relative_to(ROOT)}: {len(data):,} -> {target.stat().st_size:,} bytes")
    shutil.copyfile(args.source / PROVENANCE, out / PROVENANCE)
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the demo dataset shipped in tasks/data/scifact/ from BEIR SciFact in ../shared/data/scifact.

    python scripts/make_demo_data.py                       # default source ../shared/data/scifact
    python scripts/make_demo_data.py --source DIR --out tasks/data/scifact

What ships: the whole BEIR SciFact release (5,183 abstracts, 1,109 claims, train and test qrels),
byte-identical once decompressed, as gzip files (level 9, mtime 0, no file name: the output bytes
depend only on the input bytes, so re-running the script reproduces the committed files), plus
MANIFEST.json with the sha256 of every decompressed file. We ship the full corpus rather than a
subset with distractors because BM25's NDCG@10 on SciFact test is a published number (0.665 BEIR,
~0.68 flat indexes): the demo's raw-query baseline can be checked against it, which a sampled
corpus would break. Compressed, the corpus is ~2.75 MB. The source is checked against the BEIR
release hashes first, so a modified copy is refused.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# sha256 of the BEIR scifact.zip members (../shared/data/scifact/SOURCE.md)
BEIR_SHA256 = {
    "corpus.jsonl": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    "queries.jsonl": "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
    "qrels/train.tsv": "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
    "qrels/test.tsv": "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--out", type=Path, default=ROOT / "tasks" / "data" / "scifact")
    args = parser.parse_args(argv)
    manifest = {}
    for name, expected in BEIR_SHA256.items():
        data = (args.source / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise SystemExit(f"{args.source / name}: sha256 {digest} is not the BEIR release's {expected}")
        target = args.out / (name + ".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        manifest[name] = {"sha256": digest, "bytes": len(data), "file": name + ".gz"}
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
              f"{len(data):,} -> {target.stat().st_size:,} bytes")
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

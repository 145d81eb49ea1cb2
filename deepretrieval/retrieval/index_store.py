"""On-disk format shared by the saved indexes (BM25, dense): a folder of .npy arrays + meta.json.

    write_index(path, kind="bm25", meta={...}, arrays={"data": arr, ...})
    meta, arrays = read_index(path, kind="bm25", mmap=True)

`meta.json` holds the format name and version, the index kind, the caller's metadata, and for
every array its file name, dtype, shape and SHA-256. Arrays are plain `.npy` files, so `read_index`
memory-maps them (`np.load(mmap_mode="c")`): opening a large index costs no copy, and pages are
read only when a query touches them. Every problem with a folder — not an index, another kind,
another format version, a missing or truncated or altered array — raises `IndexFormatError` with
a message that names the file and says what to do. `verify=True` (the default) hashes each array
once on open; pass `verify=False` to skip that for very large indexes you trust.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FORMAT = "deepretrieval-index"
FORMAT_VERSION = 1
META_FILE = "meta.json"


class IndexFormatError(ValueError):
    """A saved index that cannot be used as it is: the message says why and what to do."""


def check_doc_ids(doc_ids, count: int) -> None:
    """Raise ValueError unless there are `count` doc ids and no two are equal."""
    if len(doc_ids) != count:
        raise ValueError(f"{len(doc_ids)} doc ids for {count} documents")
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("doc ids are not unique")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_index(path: str | Path, kind: str, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, arr in arrays.items():
        file = path / f"{name}.npy"
        np.save(file, np.ascontiguousarray(arr), allow_pickle=False)
        entries[name] = {"file": file.name, "dtype": str(arr.dtype), "shape": list(arr.shape),
                         "sha256": _sha256(file)}
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "meta": meta, "arrays": entries}
    (path / META_FILE).write_text(json.dumps(doc, indent=1))
    return path


def read_meta(path: str | Path) -> dict:
    """The parsed meta.json of a saved index (format and version checked)."""
    file = Path(path) / META_FILE
    if not file.is_file():
        raise IndexFormatError(f"{path} is not a saved index ({META_FILE} missing); build one with "
                               "`deepretrieval build-index`")
    try:
        doc = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{file} is corrupt ({exc}); rebuild the index") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IndexFormatError(f"{file} is not a {FORMAT} file; rebuild the index")
    if doc.get("version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has index format version {doc.get('version')}, this code reads "
                               f"version {FORMAT_VERSION}; rebuild the index with this version")
    return doc


def read_index(path: str | Path, kind: str, mmap: bool = True,
               verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    path = Path(path)
    doc = read_meta(path)
    if doc["kind"] != kind:
        raise IndexFormatError(f"{path} holds a {doc['kind']!r} index, not a {kind!r} one")
    arrays = {}
    for name, entry in doc["arrays"].items():
        file = path / entry["file"]
        if not file.is_file():
            raise IndexFormatError(f"{file} is missing; rebuild the index")
        if verify and _sha256(file) != entry["sha256"]:
            raise IndexFormatError(f"{file} fails its SHA-256 checksum (corrupt or altered); rebuild the index")
        try:
            # Copy-on-write mapping: writable views (torch.from_numpy accepts them), nothing copied.
            arr = np.load(file, mmap_mode="c" if mmap else None, allow_pickle=False)
        except ValueError as exc:
            raise IndexFormatError(f"{file} is not a readable array ({exc}); rebuild the index") from exc
        if str(arr.dtype) != entry["dtype"] or list(arr.shape) != entry["shape"]:
            raise IndexFormatError(f"{file} has dtype {arr.dtype} shape {list(arr.shape)}, meta.json says "
                                   f"{entry['dtype']} {entry['shape']}; rebuild the index")
        arrays[name] = arr
    return doc["meta"], arrays


class StringTable:
    """A read-only list of strings stored as one UTF-8 blob + offsets (compact, memory-mappable).

    `StringTable.pack(strings)` gives the two arrays to save; `StringTable(blob, offsets)` reads
    them back; `table[i]` decodes one string, `table.to_list()` all of them.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets           # uint8 [total bytes], int64 [n + 1]

    @staticmethod
    def pack(strings: list[str]) -> dict[str, np.ndarray]:
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return {"blob": np.frombuffer(b"".join(encoded), dtype=np.uint8), "offsets": offsets}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode()

    def to_list(self) -> list[str]:
        raw, off = self.blob.tobytes(), self.offsets.tolist()
        return [raw[a:b].decode() for a, b in zip(off[:-1], off[1:])]

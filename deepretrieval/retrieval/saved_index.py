"""Open any saved index (BM25 or dense) behind one search interface.

    from deepretrieval.retrieval.saved_index import open_index
    index = open_index("runs/scifact.bm25")         # or a dense index folder
    index.search("what causes cancer?", k=10)       # [(doc_id, score), ...] best first
    index.kind                                      # "bm25" or "dense"

Indexes are written by `deepretrieval build-index` (or `BM25Index.save` / `DenseRetriever.save`);
a folder that is not an index, or one in another format version, raises `IndexFormatError` with
a message that says what to do.
"""
from __future__ import annotations

from pathlib import Path

from .index_store import IndexFormatError, read_meta


class SavedIndex:
    """A loaded BM25Index or DenseRetriever with a one-query `search`."""

    def __init__(self, kind: str, engine):
        self.kind, self.engine = kind, engine

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        return self.engine.search([query], k)[0]


def open_index(path: str | Path, device: str = "cpu") -> SavedIndex:
    kind = read_meta(path)["kind"]
    if kind == "bm25":
        from .bm25 import BM25Index
        return SavedIndex(kind, BM25Index.load(path))
    if kind == "dense":
        from .dense_index import DenseRetriever
        return SavedIndex(kind, DenseRetriever.load(path, device=device))
    raise IndexFormatError(f"{path} holds an index of unknown kind {kind!r}")

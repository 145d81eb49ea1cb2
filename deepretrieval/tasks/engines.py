"""The search engine of a task, built from its `[task.engine]` config: BM25, dense, or a literature backend.

    from deepretrieval.tasks.engines import EngineConfig, ranked_retriever, literature_backend
    bm25 = ranked_retriever(EngineConfig(kind="bm25", k1=1.2, b=0.75), doc_ids, texts)
    bm25.search(["query text"], k=3000)                  # [[(doc_id, score), ...]]
    pubmed = literature_backend(EngineConfig(kind="pubmed", cache="runs/cache/pubmed.sqlite"))
    pubmed.search("asthma AND budesonide", max_results=3000, max_date="2018/05/17")

Ranked retrievers (classic IR, evidence seeking) are `deepretrieval.retrieval.bm25.BM25Index` or
`deepretrieval.retrieval.dense_index.DenseRetriever`, loaded from a saved index (`index = "path"`, written by
`deepretrieval build-index`) or built over the task's corpus at start-up. Literature backends are
`deepretrieval.retrieval.pubmed.PubMedClient`, `deepretrieval.retrieval.ctgov.ClinicalTrialsClient` (both rate-limited,
retrying, with an optional on-disk request cache) or the offline MEDLINE backend. For the web
engines, `base_url` points the client at a mirror, a proxy or a test server instead of the public
service, and `timeout_s` (one attempt in all), `read_timeout_s` (silence between bytes) and
`connect_timeout_s` bound each request:

    [task.engine]
    kind = "pubmed"
    base_url = "http://127.0.0.1:8080/entrez/eutils/"
    timeout_s = 30
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepretrieval.retrieval.http_client import CONNECT_TIMEOUT, READ_TIMEOUT, TOTAL_TIMEOUT, check_base_url

RANKED_KINDS = ("bm25", "dense")
LITERATURE_KINDS = ("pubmed", "ctgov", "medline")
WEB_KINDS = ("pubmed", "ctgov")


@dataclass(frozen=True)
class EngineConfig:
    kind: str = "bm25"          # bm25 | dense | pubmed | ctgov | medline
    index: str = ""             # saved index folder (bm25 / dense); "" = build over the corpus
    corpus: str = ""            # corpus file / BEIR folder to index (medline: a BEIR folder's titles and
                                # abstracts instead of MEDLINE XML); "" = the task's data folder
    k1: float = 0.9             # BM25 (Pyserini's defaults; the paper's SciFact config: 1.2 / 0.75)
    b: float = 0.4
    model: str = ""             # dense encoder: HF / sentence-transformers folder; "" = built-in MiniLM
    device: str = "cpu"         # cpu | cuda | auto (cuda when present)
    batch_size: int = 64        # dense encoding batch
    cache: str = ""             # on-disk request cache (sqlite file) for pubmed / ctgov
    medline: tuple[str, ...] = ()   # MEDLINE XML files for the offline backend; () = built-in sample
    workers: int = 8            # threads for per-request engines
    base_url: str = ""          # pubmed / ctgov: the service's URL; "" = the public one
    timeout_s: float = TOTAL_TIMEOUT            # pubmed / ctgov: one request attempt in all
    read_timeout_s: float = READ_TIMEOUT        # ... the longest silence while reading
    connect_timeout_s: float = CONNECT_TIMEOUT  # ... opening the connection

    def __post_init__(self):
        kinds = RANKED_KINDS + LITERATURE_KINDS
        if self.kind not in kinds:
            raise ValueError(f"task.engine.kind = {self.kind!r} is not one of {kinds}")
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError("task.engine.workers and task.engine.batch_size must be >= 1")
        if min(self.timeout_s, self.read_timeout_s, self.connect_timeout_s) <= 0:
            raise ValueError("task.engine.timeout_s, read_timeout_s and connect_timeout_s must be > 0")
        if self.base_url:
            if self.kind not in WEB_KINDS:
                raise ValueError(f"task.engine.base_url is for the web engines {WEB_KINDS}, "
                                 f"not {self.kind!r}")
            try:
                check_base_url(self.base_url)
            except ValueError as exc:
                raise ValueError(f"task.engine.base_url: {exc}") from None


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def ranked_retriever(cfg: EngineConfig, doc_ids: list[str] | None = None, texts: list[str] | None = None):
    """A batched `search(queries, k)` engine: the saved index, or one built over (doc_ids, texts)."""
    if cfg.kind not in RANKED_KINDS:
        raise ValueError(f"task.engine.kind = {cfg.kind!r}: this task needs one of {RANKED_KINDS}")
    if cfg.index:
        from deepretrieval.retrieval.saved_index import open_index
        engine = open_index(cfg.index, device=_device(cfg.device))
        if engine.kind != cfg.kind:
            raise ValueError(f"task.engine.index {cfg.index} holds a {engine.kind} index, not {cfg.kind}")
        return engine.engine
    if doc_ids is None or texts is None:
        raise ValueError("task.engine: give a saved `index` or a corpus to build one over")
    if cfg.kind == "bm25":
        from deepretrieval.retrieval.analyzer import Analyzer
        from deepretrieval.retrieval.bm25 import BM25Index
        return BM25Index.build(doc_ids, texts, Analyzer(), k1=cfg.k1, b=cfg.b)
    from deepretrieval.retrieval.bert_encoder import BUILTIN, load_encoder
    from deepretrieval.retrieval.dense_index import DenseRetriever
    model = cfg.model or BUILTIN
    return DenseRetriever.build(load_encoder(model, device=_device(cfg.device)), doc_ids, texts, model,
                                batch_size=cfg.batch_size)


def literature_backend(cfg: EngineConfig):
    """A `deepretrieval.retrieval.search_backend.SearchBackend` for literature / trial search."""
    web = {"cache": cfg.cache or None, "total_timeout": cfg.timeout_s,
           "read_timeout": cfg.read_timeout_s, "connect_timeout": cfg.connect_timeout_s}
    if cfg.base_url:
        web["base_url"] = cfg.base_url
    if cfg.kind == "pubmed":
        from deepretrieval.retrieval.pubmed import PubMedClient
        return PubMedClient(**web)
    if cfg.kind == "ctgov":
        from deepretrieval.retrieval.ctgov import ClinicalTrialsClient
        return ClinicalTrialsClient(**web)
    if cfg.kind == "medline":
        try:
            from deepretrieval.retrieval.medline_backend import MedlineBackend
        except ImportError as exc:
            raise SystemExit("the offline MEDLINE backend (retrieval/medline_backend.py) is not "
                             "available in this version; use engine kind 'pubmed'") from exc
        if cfg.corpus:                  # a BEIR folder: its titles and abstracts
            from deepretrieval.retrieval.medline_corpus import records_from_beir
            return MedlineBackend(records_from_beir(Path(cfg.corpus) / "corpus.jsonl"), k1=cfg.k1, b=cfg.b)
        return MedlineBackend.from_files(*cfg.medline) if cfg.medline else MedlineBackend.builtin()
    raise ValueError(f"task.engine.kind = {cfg.kind!r}: literature search needs one of {LITERATURE_KINDS}")

"""A task by name from its `[task]` config: the one place that knows every family.

    from deepretrieval.tasks.registry import TaskConfig, build_task
    cfg = TaskConfig(family="classic_ir", data="builtin:scifact", template="scifact",
                     engine=EngineConfig(kind="bm25", k1=1.2, b=0.75))
    task = build_task(cfg)           # a tasks.task.Task: prompts / reward / evaluate

Families and what their fields mean:
  literature_search  data = folder of {train,val,test}.jsonl reviews; dataset = pubmed | ctgov
                     (which id list is the target); engine pubmed | ctgov | medline; k = 3000
  evidence_seeking   data = folder of DPR-style QA split files; passages = corpus file (BEIR
                     corpus.jsonl or DPR psgs_w100.tsv); dataset = nq | triviaqa | squad; engine
                     bm25 | dense; k = 3000
  classic_ir         data = BEIR folder; template = scifact | nfcorpus | fever | hotpotqa |
                     msmarco_beir | msmarco_sparse | msmarco_dense; engine bm25 | dense;
                     reward_k (NDCG depth in training), recall_bonus
  text_to_sql        data = Spider / BIRD folder; dataset = spider | bird; split_map,
                     sample_rows, timeout_s, workers (SQL worker processes)
`limit` > 0 keeps the first `limit` examples of every split (smoke runs, the demo).
`data = "builtin:scifact"` / `"builtin:spider"` name the datasets that ship with the package
(tasks/packaged_data.py); so does an engine's `corpus`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .engines import LITERATURE_KINDS, RANKED_KINDS, EngineConfig, literature_backend, ranked_retriever
from .packaged_data import resolve_data_path
from .prompts import TEMPLATES
from .task import Task

FAMILIES = ("literature_search", "evidence_seeking", "classic_ir", "text_to_sql")
# family -> (allowed datasets, default dataset, default template)
_FAMILY = {
    "literature_search": (("pubmed", "ctgov"), "pubmed", "literature"),
    "evidence_seeking": (("nq", "triviaqa", "squad"), "nq", "evidence"),
    "classic_ir": ((), "", "scifact"),
    "text_to_sql": (("spider", "bird"), "spider", "sql"),
}


@dataclass(frozen=True)
class TaskConfig:
    family: str = "classic_ir"
    data: str = ""
    dataset: str = ""                   # "" = the family's default (see above)
    template: str = ""                  # "" = the family's default prompt template
    engine: EngineConfig = field(default_factory=EngineConfig)
    k: int = 3000                       # retrieval depth: literature Recall@k, evidence rank limit
    reward_k: int = 1000                # classic IR: NDCG depth of the training reward
    recall_bonus: float = 0.0           # classic IR: +bonus when anything relevant is retrieved
    passages: str = ""                  # evidence seeking: the passage corpus
    split_map: dict[str, str] = field(default_factory=dict)   # text-to-SQL: our split -> dataset split
    sample_rows: int = 0                # text-to-SQL: example rows per table in the prompt
    timeout_s: float = 30.0             # text-to-SQL: per query
    workers: int = 1                    # text-to-SQL: worker processes
    limit: int = 0                      # keep the first `limit` examples of each split (0 = all)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"task.family = {self.family!r} is not one of {FAMILIES}")
        datasets, _, _ = _FAMILY[self.family]
        if self.dataset and self.dataset not in datasets:
            raise ValueError(f"task.dataset = {self.dataset!r} is not one of {datasets} for {self.family}")
        if self.template and self.template not in TEMPLATES:
            raise ValueError(f"task.template = {self.template!r} is not one of {sorted(TEMPLATES)}")
        wants_sql = self.family == "text_to_sql"
        if (TEMPLATES[self.resolved_template].answer_key == "sql") != wants_sql:
            raise ValueError(f"task.template = {self.template!r} does not fit family {self.family!r} "
                             "(SQL templates go with text_to_sql only)")
        needs = {"literature_search": LITERATURE_KINDS, "evidence_seeking": RANKED_KINDS,
                 "classic_ir": RANKED_KINDS}.get(self.family)
        if needs and self.engine.kind not in needs:
            raise ValueError(f"task.engine.kind = {self.engine.kind!r} does not fit {self.family} "
                             f"(use one of {needs})")
        if not self.data:
            raise ValueError("task.data is empty: give the dataset folder")
        if min(self.k, self.reward_k, self.workers) < 1 or self.limit < 0:
            raise ValueError("task.k, task.reward_k, task.workers must be >= 1 and task.limit >= 0")

    @property
    def resolved_dataset(self) -> str:
        return self.dataset or _FAMILY[self.family][1]

    @property
    def resolved_template(self) -> str:
        return self.template or _FAMILY[self.family][2]


def build_task(cfg: TaskConfig) -> Task:
    cfg = dataclasses.replace(cfg, data=resolve_data_path(cfg.data),
                              engine=dataclasses.replace(cfg.engine, corpus=resolve_data_path(cfg.engine.corpus)))
    if cfg.family == "literature_search":
        from .literature_search import TARGET_FIELDS, LiteratureSearchTask
        task = LiteratureSearchTask.from_files(cfg.data, literature_backend(cfg.engine),
                                               TARGET_FIELDS[cfg.resolved_dataset], k=cfg.k,
                                               workers=cfg.engine.workers)
    elif cfg.family == "evidence_seeking":
        from .evidence_seeking import EvidenceSeekingTask, load_passages
        if not cfg.passages:
            raise ValueError("task.passages is empty: evidence seeking needs the passage corpus file")
        ids, texts = load_passages(cfg.passages)
        task = EvidenceSeekingTask.from_files(cfg.data, ranked_retriever(cfg.engine, ids, texts),
                                              dict(zip(ids, texts)), dataset=cfg.resolved_dataset, k=cfg.k)
    elif cfg.family == "classic_ir":
        from .classic_ir import ClassicIRTask
        ids = texts = None
        if not cfg.engine.index:
            from deepretrieval.retrieval.beir import load_corpus
            ids, texts = load_corpus(Path(cfg.engine.corpus or cfg.data) / "corpus.jsonl")
        task = ClassicIRTask.from_beir(cfg.data, ranked_retriever(cfg.engine, ids, texts),
                                       reward_k=cfg.reward_k, recall_bonus=cfg.recall_bonus)
    else:
        from .text_to_sql import TextToSQLTask
        task = TextToSQLTask.from_dataset(cfg.data, cfg.resolved_dataset, split_map=cfg.split_map or None,
                                          sample_rows=cfg.sample_rows, workers=cfg.workers,
                                          timeout_s=cfg.timeout_s)
    task.template = cfg.resolved_template
    if cfg.limit:
        task.limit(cfg.limit)
    return task

"""A task by name from its `[task]` config: the one place that knows every family.

    from deepretrieval.tasks.registry import TaskConfig, build_task
    cfg = TaskConfig(family="classic_ir", data="builtin:scifact", template="scifact",
                     engine=EngineConfig(kind="bm25", k1=1.2, b=0.75))
    task = build_task(cfg)           # a tasks.task.Task: prompts / reward / evaluate

Families and what their fields mean:
  literature_search  data = folder of {train,val,test}.jsonl reviews; dataset = pubmed | ctgov
                     (which id list is the target) | beir (a BEIR folder: claims -> their judged
                     documents, searched by the medline engine over the folder's own corpus);
                     engine pubmed | ctgov | medline; k = 3000; date_limit (search up to the
                     review's date)
  evidence_seeking   data = folder of DPR-style QA split files; passages = corpus file (BEIR
                     corpus.jsonl or DPR psgs_w100.tsv); dataset = nq | triviaqa | squad; engine
                     bm25 | dense; k = 3000
  classic_ir         data = BEIR folder (dataset = beir) or an MS MARCO subset folder
                     (dataset = msmarco_subset: train.jsonl, dev.jsonl); template = scifact |
                     nfcorpus | fever | hotpotqa | msmarco_beir, each also as <name>_dense, |
                     msmarco_sparse | msmarco_dense; engine bm25 | dense; reward_k (NDCG depth
                     in training), recall_bonus, ideal_dcg (sorted | listed), example_unit
                     (query | pair), query_mode (rewrite | expand); see tasks/classic_ir.py
  text_to_sql        data = Spider / BIRD folder; dataset = spider | bird; split_map,
                     sample_rows, timeout_s, workers (SQL worker processes); sql_reward
                     (reference | match | row_recall | partial), sql_schema (sqlite |
                     schema_sql), db_split (train and test on disjoint halves of the databases)
`prompt_frame` = chat | raw and `reasoning` = true | false (think first, or the answer alone;
tasks/prompts.py); `val_fraction` > 0 holds that share of train out as "val" (by a hash of each
example's id, or of its database for text-to-SQL). The template defaults to the family's (and
dataset's) reference prompt. `limit` > 0 keeps the first `limit` examples of every split (smoke
runs, the demo). docs/FIDELITY.md says which option reproduces the reference where ours differs.
`data = "builtin:scifact"` / `"builtin:spider"` name the datasets that ship with the package
(tasks/packaged_data.py); so does an engine's `corpus`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .classic_ir import IDEALS, QUERY_MODES, UNITS
from .engines import LITERATURE_KINDS, RANKED_KINDS, EngineConfig, literature_backend, ranked_retriever
from .packaged_data import resolve_data_path
from .prompts import FRAMES, TEMPLATES
from .task import Task
from .text_to_sql import REWARDS as SQL_REWARDS
from .text_to_sql import SCHEMAS as SQL_SCHEMAS

FAMILIES = ("literature_search", "evidence_seeking", "classic_ir", "text_to_sql")
# family -> (allowed datasets, default dataset, default template)
_FAMILY = {
    "literature_search": (("pubmed", "ctgov", "beir"), "pubmed", "literature"),
    "evidence_seeking": (("nq", "triviaqa", "squad"), "nq", "evidence"),
    "classic_ir": (("beir", "msmarco_subset"), "beir", "scifact"),
    "text_to_sql": (("spider", "bird"), "spider", "sql"),
}
# (family, dataset) -> its reference prompt where the family's default is not it
_DATASET_TEMPLATE = {("literature_search", "ctgov"): "ctgov",
                     ("literature_search", "beir"): "literature_claim",
                     ("evidence_seeking", "triviaqa"): "evidence_tqa_squad",
                     ("evidence_seeking", "squad"): "evidence_tqa_squad"}


@dataclass(frozen=True)
class TaskConfig:
    family: str = "classic_ir"
    data: str = ""
    dataset: str = ""                   # "" = the family's default (see above)
    template: str = ""                  # "" = the family's (and dataset's) reference prompt template
    prompt_frame: str = "chat"          # chat turns | raw: the reference's prompt string (tasks/prompts.py)
    engine: EngineConfig = field(default_factory=EngineConfig)
    k: int = 3000                       # retrieval depth: literature Recall@k, evidence rank limit
    date_limit: bool = True             # literature: search only what was published by the review's date
    reward_k: int = 1000                # classic IR: NDCG depth of the training reward
    recall_bonus: float = 0.0           # classic IR: +bonus when anything relevant is retrieved
    ideal_dcg: str = "sorted"           # classic IR reward: sorted | listed (the reference's qrels order)
    example_unit: str = "query"         # classic IR: query | pair (the reference's SciFact examples)
    passages: str = ""                  # evidence seeking: the passage corpus
    split_map: dict[str, str] = field(default_factory=dict)   # text-to-SQL: our split -> dataset split
    sample_rows: int = 0                # text-to-SQL: example rows per table in the prompt
    timeout_s: float = 30.0             # text-to-SQL: per query
    workers: int = 1                    # text-to-SQL: worker processes
    sql_reward: str = "reference"       # text-to-SQL training reward: reference | match | row_recall
    sql_schema: str = "sqlite"          # text-to-SQL prompt schema: sqlite CREATE statements | schema_sql
    limit: int = 0                      # keep the first `limit` examples of each split (0 = all)
    reasoning: bool = True              # think, then answer (the paper); false: the answer alone
    query_mode: str = "rewrite"         # classic IR: the engine gets the answer | "expand": the input + it
    val_fraction: float = 0.0           # > 0: hold this share of train out as "val" (data without one)
    db_split: bool = False              # text-to-SQL: train / test on disjoint halves of the databases
                                        # of the split mapped to "test" (TextToSQLTask.split_by_database)

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
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"task.val_fraction = {self.val_fraction} must be in [0, 1)")
        if self.db_split and self.family != "text_to_sql":
            raise ValueError("task.db_split is a text-to-SQL option")
        for name, allowed in (("prompt_frame", FRAMES), ("ideal_dcg", IDEALS), ("example_unit", UNITS),
                              ("query_mode", QUERY_MODES),
                              ("sql_reward", SQL_REWARDS), ("sql_schema", SQL_SCHEMAS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"task.{name} = {getattr(self, name)!r} is not one of {allowed}")

    @property
    def resolved_dataset(self) -> str:
        return self.dataset or _FAMILY[self.family][1]

    @property
    def resolved_template(self) -> str:
        return self.template or _DATASET_TEMPLATE.get((self.family, self.resolved_dataset), _FAMILY[self.family][2])


def build_task(cfg: TaskConfig) -> Task:
    cfg = dataclasses.replace(cfg, data=resolve_data_path(cfg.data),
                              engine=dataclasses.replace(cfg.engine, corpus=resolve_data_path(cfg.engine.corpus)))
    if cfg.family == "literature_search":
        from .literature_search import TARGET_FIELDS, LiteratureSearchTask
        options = dict(k=cfg.k, workers=cfg.engine.workers, date_limit=cfg.date_limit)
        if cfg.resolved_dataset == "beir":      # the engine searches the BEIR folder's own corpus
            engine = dataclasses.replace(cfg.engine, corpus=cfg.engine.corpus or cfg.data)
            task = LiteratureSearchTask.from_beir(cfg.data, literature_backend(engine), **options)
        else:
            task = LiteratureSearchTask.from_files(cfg.data, literature_backend(cfg.engine),
                                                   TARGET_FIELDS[cfg.resolved_dataset], **options)
    elif cfg.family == "evidence_seeking":
        from .evidence_seeking import EvidenceSeekingTask, load_passages
        if not cfg.passages:
            raise ValueError("task.passages is empty: evidence seeking needs the passage corpus file")
        ids, texts = load_passages(cfg.passages)
        task = EvidenceSeekingTask.from_files(cfg.data, ranked_retriever(cfg.engine, ids, texts),
                                              dict(zip(ids, texts)), dataset=cfg.resolved_dataset, k=cfg.k)
    elif cfg.family == "classic_ir":
        task = _classic_ir_task(cfg)
    else:
        from .text_to_sql import TextToSQLTask
        task = TextToSQLTask.from_dataset(cfg.data, cfg.resolved_dataset, split_map=cfg.split_map or None,
                                          sample_rows=cfg.sample_rows, schema=cfg.sql_schema,
                                          reward=cfg.sql_reward, workers=cfg.workers, timeout_s=cfg.timeout_s)
    task.template, task.prompt_frame, task.reasoning = cfg.resolved_template, cfg.prompt_frame, cfg.reasoning
    if cfg.db_split:
        task.split_by_database(source="test")
    if cfg.val_fraction:
        task.hold_out_validation(cfg.val_fraction)
    if cfg.limit:
        task.limit(cfg.limit)
    return task


def _classic_ir_task(cfg: TaskConfig) -> Task:
    from .classic_ir import ClassicIRTask
    from .data_files import load_msmarco_subset
    ids = texts = None
    if not cfg.engine.index:
        from deepretrieval.retrieval.beir import load_corpus
        if cfg.resolved_dataset == "msmarco_subset" and not cfg.engine.corpus:
            raise ValueError("task.engine: an MS MARCO subset needs the passage collection: give "
                             "task.engine.index or task.engine.corpus (a folder with corpus.jsonl)")
        ids, texts = load_corpus(Path(cfg.engine.corpus or cfg.data) / "corpus.jsonl")
    retriever = ranked_retriever(cfg.engine, ids, texts)
    options = dict(reward_k=cfg.reward_k, recall_bonus=cfg.recall_bonus, ideal=cfg.ideal_dcg,
                   unit=cfg.example_unit, query_mode=cfg.query_mode)
    if cfg.resolved_dataset == "msmarco_subset":
        return ClassicIRTask(load_msmarco_subset(cfg.data), retriever, **options)
    return ClassicIRTask.from_beir(cfg.data, retriever, doc_ids=ids, **options)

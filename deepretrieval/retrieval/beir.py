"""Load a BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

    from deepretrieval.retrieval.beir import load_beir
    ds = load_beir("path/to/scifact", split="test")       # a BEIR folder, e.g. packaged_dataset("scifact")
    ds.doc_ids, ds.doc_texts            # corpus order; text = title + "\\n" + text
    doc_ids, texts = load_corpus(folder / "corpus.jsonl")   # the corpus alone
    ds.queries                          # {query_id: text} for the queries judged in this split
    load_queries(folder / "queries.jsonl")   # all queries, judged or not
    ds.qrels                            # {query_id: {doc_id: relevance}} as in the file
    print(ds.report)                    # counts, and the ids the qrels name that don't exist

Files may have CRLF line ends (SciFact's qrels do) and a header line in the qrels. Nothing is
dropped silently: a qrels line naming a query missing from queries.jsonl, or a document missing
from corpus.jsonl, is counted in `ds.report` (with up to 10 example ids) and logged as a warning
(`check_qrels`, which the classic-IR task shares). Judgments of unknown documents stay in `qrels`
(they can never be retrieved, so recall counts them as missed, which is the honest number);
judged queries without text are left out of `queries` (nothing can be searched for them) and
listed in the report. When *every* judgment names an unknown document the qrels do not belong
to the corpus and any metric would be 0: that is a `BeirFormatError`, as is any unknown id with
`strict=True`. Malformed lines, an empty corpus and a doc id given twice raise `BeirFormatError`
naming the file (and line).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class BeirFormatError(ValueError):
    """A BEIR file that cannot be read: the message names the file and line."""


@dataclass
class LoadReport:
    num_docs: int | None = 0        # None: the corpus was not checked
    num_queries_in_file: int = 0
    num_judged_queries: int = 0
    num_judgments: int = 0
    unknown_query_ids: list[str] = field(default_factory=list)   # in qrels, not in queries.jsonl
    unknown_doc_ids: list[str] = field(default_factory=list)     # in qrels, not in corpus.jsonl
    num_unknown_query_judgments: int = 0
    num_unknown_doc_judgments: int = 0

    @property
    def clean(self) -> bool:
        return not (self.unknown_query_ids or self.unknown_doc_ids)

    def __str__(self) -> str:
        text = "" if self.num_docs is None else f"{self.num_docs} docs, "
        text += (f"{self.num_judged_queries} judged queries ({self.num_queries_in_file} in queries.jsonl), "
                 f"{self.num_judgments} judgments")
        for what, ids, n in (("query", self.unknown_query_ids, self.num_unknown_query_judgments),
                             ("doc", self.unknown_doc_ids, self.num_unknown_doc_judgments)):
            if ids:
                text += (f"; {len(ids)} unknown {what} ids in {n} judgments "
                         f"(e.g. {', '.join(ids[:10])})")
        return text


@dataclass
class BeirDataset:
    doc_ids: list[str]
    doc_texts: list[str]                      # title + "\n" + text (the text alone without a title)
    queries: dict[str, str]                   # judged queries of the split that have a text
    qrels: dict[str, dict[str, int]]          # as in the qrels file
    report: LoadReport


def _read_jsonl(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a BEIR folder holds corpus.jsonl, queries.jsonl "
                                "and qrels/<split>.tsv")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield str(obj["_id"]), obj
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BeirFormatError(f"{path}:{lineno}: not a JSON object with an _id ({exc})") from exc


def load_corpus_fields(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(doc ids, titles, texts) of a corpus.jsonl in file order; a missing field is ""."""
    doc_ids, titles, texts = [], [], []
    for did, obj in _read_jsonl(Path(path)):
        doc_ids.append(did)
        titles.append(obj.get("title") or "")
        texts.append(obj.get("text") or "")
    if not doc_ids:
        raise BeirFormatError(f"{path} holds no documents: an index over it would find nothing")
    if len(set(doc_ids)) != len(doc_ids):
        first: dict[str, int] = {}
        for number, did in enumerate(doc_ids, 1):
            if first.setdefault(did, number) != number:
                raise BeirFormatError(f"{path}: doc id {did!r} is given twice (documents {first[did]} and "
                                      f"{number}); ids must be unique")
    return doc_ids, titles, texts


def load_corpus(path: str | Path) -> tuple[list[str], list[str]]:
    """(doc ids, texts) of a corpus.jsonl in file order; text = title + "\\n" + text."""
    doc_ids, titles, texts = load_corpus_fields(path)
    return doc_ids, [f"{title}\n{text}" if title else text for title, text in zip(titles, texts)]


def load_queries(path: str | Path) -> dict[str, str]:
    """{query id: text} of a queries.jsonl (all of them, judged or not)."""
    return {qid: obj.get("text") or "" for qid, obj in _read_jsonl(Path(path))}


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pick a split that has a qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline=None) as f:     # universal newlines: CRLF tolerated
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if parts == [""]:
                continue
            if len(parts) == 4:                              # TREC style: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            try:
                qid, did, rel = parts[0], parts[1], int(parts[2])
            except (IndexError, ValueError) as exc:
                raise BeirFormatError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', "
                                      f"got {line!r}") from exc
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def check_qrels(qrels: dict[str, dict[str, int]], query_ids: Collection[str], doc_ids: Collection[str] | None,
                where: str, strict: bool = False) -> LoadReport:
    """Count the judged queries and documents that `query_ids` / `doc_ids` (sets or dicts: looked
    up per judgment; doc_ids None: not checked) lack, warn about them naming `where` (the qrels
    file), and raise `BeirFormatError` when no judgment names a known document, or on any unknown
    id when `strict`."""
    report = LoadReport(num_docs=len(doc_ids) if doc_ids is not None else None,
                        num_queries_in_file=len(query_ids), num_judged_queries=len(qrels),
                        num_judgments=sum(len(j) for j in qrels.values()))
    unknown_docs: dict[str, None] = {}
    for qid, judged in qrels.items():
        if qid not in query_ids:
            report.unknown_query_ids.append(qid)
            report.num_unknown_query_judgments += len(judged)
        for did in judged:
            if doc_ids is not None and did not in doc_ids:
                unknown_docs[did] = None
                report.num_unknown_doc_judgments += 1
    report.unknown_doc_ids = list(unknown_docs)
    if report.num_judgments and report.num_unknown_doc_judgments == report.num_judgments:
        raise BeirFormatError(f"{where}: none of its {report.num_judgments} judgments names a document of the "
                              f"corpus (e.g. {', '.join(report.unknown_doc_ids[:3])}): the qrels and the "
                              "corpus do not belong together")
    if not report.clean:
        if strict:
            raise BeirFormatError(f"{where}: {report}")
        log.warning("%s: %s (judged queries without text are left out; judgments of documents missing "
                    "from the corpus stay and count as never retrieved)", where, report)
    return report


def load_beir(folder: str | Path, split: str = "test", strict: bool = False) -> BeirDataset:
    folder = Path(folder)
    doc_ids, doc_texts = load_corpus(folder / "corpus.jsonl")
    all_queries = load_queries(folder / "queries.jsonl")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    qrels = load_qrels(qrels_file)
    report = check_qrels(qrels, all_queries, set(doc_ids), str(qrels_file), strict)
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    return BeirDataset(doc_ids, doc_texts, queries, qrels, report)

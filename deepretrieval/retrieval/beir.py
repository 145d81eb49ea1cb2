"""Load a BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

    from deepretrieval.retrieval.beir import load_beir
    ds = load_beir("../shared/data/scifact", split="test")
    ds.doc_ids, ds.doc_texts            # corpus order; text = title + "\\n" + text
    doc_ids, texts = load_corpus(folder / "corpus.jsonl")   # the corpus alone
    ds.queries                          # {query_id: text} for the queries judged in this split
    load_queries(folder / "queries.jsonl")   # all queries, judged or not
    ds.qrels                            # {query_id: {doc_id: relevance}} as in the file
    print(ds.report)                    # counts, and the ids the qrels name that don't exist

Files may have CRLF line ends (SciFact's qrels do) and a header line in the qrels. Nothing is
dropped silently: a qrels line naming a query missing from queries.jsonl, or a document missing
from corpus.jsonl, is counted in `ds.report` (with up to 10 example ids) and logged as a warning.
Judgments of unknown documents stay in `qrels` (they can never be retrieved, so recall counts
them as missed, which is the honest number); judged queries without text are left out of
`queries` (nothing can be searched for them) and listed in the report. `strict=True` turns any
unknown id into an error. Malformed lines raise `BeirFormatError` naming file and line.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class BeirFormatError(ValueError):
    """A BEIR file that cannot be read: the message names the file and line."""


@dataclass
class LoadReport:
    num_docs: int = 0
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
        text = (f"{self.num_docs} docs, {self.num_judged_queries} judged queries "
                f"({self.num_queries_in_file} in queries.jsonl), {self.num_judgments} judgments")
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


def load_corpus(path: str | Path) -> tuple[list[str], list[str]]:
    """(doc ids, texts) of a corpus.jsonl in file order; text = title + "\\n" + text."""
    doc_ids, texts = [], []
    for did, obj in _read_jsonl(Path(path)):
        title, text = obj.get("title") or "", obj.get("text") or ""
        doc_ids.append(did)
        texts.append(f"{title}\n{text}" if title else text)
    return doc_ids, texts


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


def load_beir(folder: str | Path, split: str = "test", strict: bool = False) -> BeirDataset:
    folder = Path(folder)
    doc_ids, doc_texts = load_corpus(folder / "corpus.jsonl")
    all_queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")

    report = LoadReport(num_docs=len(doc_ids), num_queries_in_file=len(all_queries),
                        num_judged_queries=len(qrels),
                        num_judgments=sum(len(j) for j in qrels.values()))
    known_docs = set(doc_ids)
    unknown_docs: dict[str, None] = {}
    for qid, judged in qrels.items():
        if qid not in all_queries:
            report.unknown_query_ids.append(qid)
            report.num_unknown_query_judgments += len(judged)
        for did in judged:
            if did not in known_docs:
                unknown_docs[did] = None
                report.num_unknown_doc_judgments += 1
    report.unknown_doc_ids = list(unknown_docs)
    if not report.clean:
        if strict:
            raise BeirFormatError(f"{folder} ({split}): {report}")
        log.warning("%s (%s): %s", folder, split, report)
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    return BeirDataset(doc_ids, doc_texts, queries, qrels, report)

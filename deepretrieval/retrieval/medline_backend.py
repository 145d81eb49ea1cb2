"""Offline literature search: PubMed's query language over local MEDLINE records, BM25-ranked.

    backend = MedlineBackend.builtin()                     # the shipped sample (2,399 records)
    backend = MedlineBackend.from_files("pubmed24n0001.xml.gz", ...)   # or any MEDLINE XML
    backend.search('asthma[tiab] AND (budesonide OR formoterol)', max_results=3000, max_date="2019")
    backend.match("asthma[mh] NOT review[pt]")             # the Boolean answer set, unranked

`search` implements `deepretrieval.retrieval.search_backend.SearchBackend`: the Boolean query (parsed by
`deepretrieval.retrieval.pubmed_query`) decides which records match, and BM25 (`deepretrieval.retrieval.bm25.BM25Index`,
Lucene formula, over title + abstract) orders the matches by the query's positive terms (those
not under NOT, and not the [pt]/[au] filters; a truncated word scores as its expansions), best
first; a match that shares no scored term comes after, in corpus order.

Matching works on the analysed words of each field (`deepretrieval.retrieval.analyzer.Analyzer`: lower case,
Lucene's English stop words, Snowball stems), so `tumours` matches `tumour`, and a stop word alone
matches nothing and is ignored (as PubMed ignores them). Per field:
  ti, ab      the title, the abstract;  tiab = title + abstract + author keywords ([ot])
  mh          MeSH descriptors; a term matches a heading containing its words in order
              ("neoplasms"[mh] matches "Breast Neoplasms": a stand-in for PubMed's explosion down
              the MeSH tree, which needs the tree we do not have)
  pt          publication types, matched like mh
  au          "Smith JA" matches smith[au], smith j[au], smith ja[au] (PubMed's rule: last name,
              then initials as a prefix); not smithson[au]
  all         (untagged) title, abstract, keywords, MeSH, publication types and author names
A quoted phrase (or an unquoted word the analyzer splits, like "covid-19") must appear as adjacent
words within one field value. Truncation `word*` matches every unstemmed word with that prefix.
Date limits use each record's `pub_date` (see retrieval.medline_corpus); records without one never
match a date limit. Sets of matching rows are sorted numpy arrays, so AND/OR/NOT are vectorised.
Memory: every field's analysed words are kept per record for phrase checks; fine for corpora of
up to a few hundred thousand records.
"""
from __future__ import annotations

import bisect
import datetime as dt
import functools
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from deepretrieval.retrieval.analyzer import Analyzer
from deepretrieval.retrieval.bm25 import BM25Index
from deepretrieval.retrieval.medline_corpus import MedlineRecord, builtin_corpus_path, load_medline
from deepretrieval.retrieval.pubmed_query import And, DateRange, Node, Not, Or, QueryParseError, Term, parse_query
from deepretrieval.retrieval.search_backend import DateLike, parse_date

_SEP = "\x00"   # between the values of a multi-valued field, so no phrase spans two of them
FIELD_GROUPS = {"ti": ("ti",), "ab": ("ab",), "ot": ("kw",), "tiab": ("ti", "ab", "kw"),
                "mh": ("mh",), "pt": ("pt",), "all": ("ti", "ab", "kw", "mh", "pt", "au")}
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class _Field:
    """One searchable field: per-record stems, and postings by stem and by unstemmed word."""
    tokens: list[list[str]] = field(default_factory=list)      # row -> stems (with _SEP)
    by_stem: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_word: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    words: list[str] = field(default_factory=list)              # sorted unstemmed vocabulary

    def add(self, row: int, words: list[str], stems: list[str]) -> None:
        """Adds the next record (rows are added in increasing order, so postings stay sorted)."""
        self.tokens.append(stems)
        for index, keys in ((self.by_stem, set(stems)), (self.by_word, set(words))):
            keys.discard(_SEP)
            for key in keys:
                index[key].append(row)

    def freeze(self) -> None:
        self.by_stem = {k: np.asarray(v, dtype=np.int64) for k, v in self.by_stem.items()}
        self.by_word = {k: np.asarray(v, dtype=np.int64) for k, v in self.by_word.items()}
        self.words = sorted(self.by_word)


class MedlineBackend:
    """Boolean + BM25 search over MEDLINE records; thread-safe for searching."""

    def __init__(self, records: list[MedlineRecord], analyzer: Analyzer | None = None,
                 k1: float = 0.9, b: float = 0.4, show_progress: bool = True):
        if not records:
            raise ValueError("no MEDLINE records to search")
        self.analyzer = analyzer or Analyzer()
        cfg = self.analyzer.config
        # Same words as the analyzer, before stemming: what truncation matches against.
        self._plain = Analyzer(cfg.stopwords, None, cfg.lowercase, cfg.token_pattern, cfg.possessive)
        self.pmids = [r.pmid for r in records]
        if len(set(self.pmids)) != len(self.pmids):
            raise ValueError("duplicate PMIDs among the records; load them with load_medline")
        self.fields = {name: _Field() for name in ("ti", "ab", "kw", "mh", "pt", "au")}
        # Authors are matched by name, not by words: "smith ja", lower case, sorted for prefix search.
        names = sorted({(a.lower(), row) for row, r in enumerate(records) for a in r.authors})
        self._author_names = [n for n, _ in names]
        self._author_rows = [row for _, row in names]
        self._dates = np.array([r.pub_date.toordinal() if r.pub_date else -1 for r in records],
                               dtype=np.int64)
        for row, rec in enumerate(tqdm(records, desc="index MEDLINE", unit=" records",
                                       disable=not show_progress, leave=False)):
            values = {"ti": [rec.title], "ab": [rec.abstract], "kw": list(rec.keywords),
                      "mh": list(rec.mesh), "pt": list(rec.pub_types), "au": list(rec.authors)}
            for name, texts in values.items():
                self.fields[name].add(row, *self._analyse_values(texts))
        for f in self.fields.values():
            f.freeze()
        text_tokens = [[s for s in ti + ab if s != _SEP]
                       for ti, ab in zip(self.fields["ti"].tokens, self.fields["ab"].tokens)]
        self.bm25 = BM25Index.build_from_tokens(self.pmids, text_tokens, cfg, k1, b)

    @classmethod
    def from_files(cls, *paths: str | os.PathLike, **kw) -> "MedlineBackend":
        return cls(load_medline(*paths, show_progress=kw.get("show_progress", True)), **kw)

    @classmethod
    def builtin(cls) -> "MedlineBackend":
        """The MEDLINE sample shipped with the package (retrieval/data/SOURCE.md), built once per
        process and shared (searching never changes a backend)."""
        return _builtin_backend()

    def __len__(self) -> int:
        return len(self.pmids)

    # --- analysis ------------------------------------------------------------------------------
    def _analyse_values(self, texts: list[str]) -> tuple[list[str], list[str]]:
        """(unstemmed words, stems) of a field's values, aligned, with _SEP between values."""
        words, stems = [], []
        for text in texts:
            w = self._plain.tokenize(text)
            if words:
                words.append(_SEP)
                stems.append(_SEP)
            words.extend(w)
            stems.extend(self._stem(w))
        return words, stems

    def _stem(self, words: list[str]) -> list[str]:
        # The words are already the analyzer's tokens, so re-analysing them joined gives one
        # stem per word: a single call instead of one per word.
        stems = self.analyzer.tokenize(" ".join(words))
        if len(stems) != len(words):
            raise AssertionError(f"analyzer is not idempotent on its own tokens: {words} -> {stems}")
        return stems

    # --- Boolean matching ----------------------------------------------------------------------
    def _term_rows(self, term: Term, scored: list[str]) -> np.ndarray | None:
        """Rows matching a term; None for a term with no searchable words (stop words only).
        Appends the stems the term contributes to BM25 to `scored` (all but [pt] and [au],
        which are filters, not topics)."""
        if term.field == "au":
            return self._author_rows_for(term.text)
        groups = FIELD_GROUPS[term.field]
        if term.truncated:
            prefix = term.text.lower()
            words: set[str] = set()
            for name in groups:
                vocab = self.fields[name].words
                words.update(vocab[bisect.bisect_left(vocab, prefix):
                                   bisect.bisect_left(vocab, prefix + "\U0010ffff")])
            if term.field != "pt":
                scored.extend(dict.fromkeys(self._stem(sorted(words))))
            return _union_all([self.fields[name].by_word[w] for name in groups for w in words
                               if w in self.fields[name].by_word])
        stems = self.analyzer.tokenize(term.text)
        if not stems:
            return None
        if term.field != "pt":
            scored.extend(stems)
        return _union_all([self._phrase_rows(self.fields[name], stems) for name in groups])

    def _phrase_rows(self, f: _Field, stems: list[str]) -> np.ndarray:
        rows = f.by_stem.get(stems[0], _EMPTY)
        for s in stems[1:]:
            rows = np.intersect1d(rows, f.by_stem.get(s, _EMPTY), assume_unique=True)
        if len(stems) == 1 or not len(rows):
            return rows
        keep = [r for r in rows.tolist() if _contains(f.tokens[r], stems)]
        return np.asarray(keep, dtype=np.int64)

    def _author_rows_for(self, name: str) -> np.ndarray:
        q = " ".join(name.lower().split())
        # A one-word name is a last name: it must be followed by a space (or end the name);
        # with initials the last word is a prefix of the record's initials.
        prefix = q if " " in q else q + " "
        lo = bisect.bisect_left(self._author_names, prefix)
        hi = bisect.bisect_left(self._author_names, prefix + "\U0010ffff")
        rows = set(self._author_rows[lo:hi])
        i = bisect.bisect_left(self._author_names, q)
        while i < len(self._author_names) and self._author_names[i] == q:   # the exact name
            rows.add(self._author_rows[i])
            i += 1
        return np.asarray(sorted(rows), dtype=np.int64)

    def _date_rows(self, start: dt.date | None, end: dt.date | None) -> np.ndarray:
        ok = self._dates >= 0
        if start is not None:
            ok &= self._dates >= start.toordinal()
        if end is not None:
            ok &= self._dates <= end.toordinal()
        return np.flatnonzero(ok).astype(np.int64)

    def _eval(self, node: Node, scored: list[str], negated: bool = False) -> np.ndarray | None:
        if isinstance(node, Term):
            return self._term_rows(node, [] if negated else scored)
        if isinstance(node, DateRange):
            return self._date_rows(node.start, node.end)
        left = self._eval(node.left, scored, negated)
        right = self._eval(node.right, scored, negated ^ isinstance(node, Not))
        if left is None or right is None:     # a stop-word-only side constrains nothing
            return right if left is None and not isinstance(node, Not) else left
        if isinstance(node, And):
            return np.intersect1d(left, right, assume_unique=True)
        if isinstance(node, Or):
            return np.union1d(left, right)
        return np.setdiff1d(left, right, assume_unique=True)

    def _match_rows(self, query: str, max_date, min_date) -> tuple[np.ndarray, list[str]]:
        tree = parse_query(query)
        scored: list[str] = []
        rows = self._eval(tree, scored)
        if rows is None:
            raise QueryParseError("the query has no searchable words (only stop words)", query, 0)
        if max_date is not None or min_date is not None:
            lo = parse_date(min_date) if min_date is not None else None
            hi = parse_date(max_date, end=True) if max_date is not None else None
            rows = np.intersect1d(rows, self._date_rows(lo, hi), assume_unique=True)
        return rows, scored

    # --- public API ----------------------------------------------------------------------------
    def match(self, query: str, max_date: DateLike | None = None, min_date: DateLike | None = None) -> set[str]:
        """PMIDs of every record the Boolean query matches (unranked)."""
        rows, _ = self._match_rows(query, max_date, min_date)
        return {self.pmids[r] for r in rows.tolist()}

    def search(self, query: str, max_results: int = 3000, max_date: DateLike | None = None,
               min_date: DateLike | None = None) -> list[str]:
        """PMIDs of the matches, best BM25 score first, at most `max_results`."""
        rows, scored = self._match_rows(query, max_date, min_date)
        if not len(rows) or max_results <= 0:
            return []
        (ranked, _), = self.bm25.search_tokens([scored], max_results, candidates=[rows])
        return [self.pmids[r] for r in ranked.tolist()]


@functools.cache
def _builtin_backend() -> MedlineBackend:
    return MedlineBackend.from_files(builtin_corpus_path())


def _contains(tokens: list[str], phrase: list[str]) -> bool:
    """Whether `phrase` occurs in `tokens` as adjacent items."""
    n, first = len(phrase), phrase[0]
    return any(tokens[i:i + n] == phrase for i, t in enumerate(tokens) if t == first)


def _union_all(arrays: list[np.ndarray]) -> np.ndarray:
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return _EMPTY
    return arrays[0] if len(arrays) == 1 else np.unique(np.concatenate(arrays))

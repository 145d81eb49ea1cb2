"""Parser for the PubMed query language that the rewrites are written in (offline backend).

    from deepretrieval.retrieval.pubmed_query import parse_query
    parse_query('("heart attack"[tiab] OR myocard*) AND aspirin NOT review[pt] AND 2010:2015[dp]')
    # -> a tree of And / Or / Not nodes over Term and DateRange leaves

Syntax, as PubMed's help describes it:
- Boolean AND, OR, NOT in capitals (lower-case "and"/"or"/"not" are ordinary words, as in PubMed),
  evaluated strictly left to right with no precedence: `a OR b AND c` is `(a OR b) AND c`;
  parentheses group. Terms side by side without an operator are ANDed.
- "quoted phrases": the words must be adjacent, in order, within one field.
- truncation `word*`: any word starting with `word` (at least 4 characters before the `*`, an
  unquoted single word, the star at the end: PubMed's own rules).
- field tags right after a term or phrase: [tiab] [ti] [ab] [mh] [pt] [au] [ot] [all], also
  spelled out ([Title/Abstract], [MeSH Terms], [Publication Type], [Author], ...). A tag after
  several bare words applies to all of them since the last operator or parenthesis
  (`breast cancer[tiab]` is `breast[tiab] AND cancer[tiab]`); for [mh], [pt] and [au] those words
  form one name (`randomized controlled trial[pt]`, `smith j[au]`).
- publication-date limits: `2015[dp]`, `2010:2015[dp]`, `2010/01/01:2015/06[pdat]` (inclusive;
  a partial date covers its whole year or month).
Anything else (unbalanced parentheses or quotes, an operator with nothing on one side, an
unknown tag, a misplaced `*`, an empty query) raises `QueryParseError`, a `SearchError` whose
message says what and where, so the reward code can turn it into a penalty.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Union

from deepretrieval.retrieval.search_backend import SearchError, parse_date

MIN_TRUNCATION_PREFIX = 4
OPERATORS = ("AND", "OR", "NOT")

# Tag spellings (lower case, single spaces) -> canonical field.
FIELD_TAGS = {
    "tiab": "tiab", "title/abstract": "tiab",
    "ti": "ti", "title": "ti",
    "ab": "ab", "abstract": "ab",
    "mh": "mh", "mesh": "mh", "mesh terms": "mh", "mesh term": "mh", "mh:noexp": "mh",
    "majr": "mh", "mesh major topic": "mh",
    "pt": "pt", "publication type": "pt",
    "au": "au", "author": "au", "auth": "au",
    "ot": "ot", "other term": "ot", "kw": "ot", "keyword": "ot",
    "all": "all", "all fields": "all", "tw": "all", "text word": "all",
    "dp": "dp", "pdat": "dp", "publication date": "dp", "date - publication": "dp",
}
# Fields whose multi-word bare terms are one name, not words to AND.
NAME_FIELDS = frozenset({"mh", "pt", "au"})


class QueryParseError(SearchError):
    """A query the offline backend cannot parse; the message says what is wrong and where."""

    def __init__(self, message: str, query: str, pos: int):
        super().__init__(f"{message} at character {pos + 1} of query: "
                         f"{query[max(0, pos - 30):pos]}>>>{query[pos:pos + 30]}")
        self.pos = pos


@dataclass(frozen=True)
class Term:
    text: str              # as typed, without quotes, tag or trailing '*'
    field: str             # canonical field ("all" when untagged)
    phrase: bool = False   # quoted, or a name in a NAME_FIELDS field
    truncated: bool = False


@dataclass(frozen=True)
class DateRange:
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class And:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Or:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Not:                 # left AND NOT right
    left: "Node"
    right: "Node"


Node = Union[Term, DateRange, And, Or, Not]
_BINARY = {"AND": And, "OR": Or, "NOT": Not}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<phrase>"[^"]*"?)
  | (?P<tag>\[[^\]]*\]?)
  | (?P<word>[^\s()"\[\]]+)
""", re.VERBOSE)


def _tokens(query: str) -> list[tuple[str, str, int]]:
    out = []
    for m in _TOKEN.finditer(query):
        kind, text, pos = m.lastgroup, m.group(), m.start()
        if kind == "space":
            continue
        if kind == "phrase" and (len(text) < 2 or not text.endswith('"')):
            raise QueryParseError("unterminated quoted phrase", query, pos)
        if kind == "tag" and not text.endswith("]"):
            raise QueryParseError("unterminated field tag '['", query, pos)
        if kind == "word" and text in OPERATORS:
            kind = "op"
        out.append((kind, text, pos))
    return out


class _Parser:
    def __init__(self, query: str):
        self.query = query
        self.toks = _tokens(query)
        self.i = 0

    def error(self, message: str, pos: int | None = None):
        raise QueryParseError(message, self.query, len(self.query) if pos is None else pos)

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, "", len(self.query))

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            self.error("empty query", 0)
        node = self.expression()
        kind, text, pos = self.peek()
        if kind == "rparen":
            self.error("unbalanced ')'", pos)
        if kind is not None:
            self.error(f"unexpected {text!r}", pos)
        return node

    def expression(self) -> Node:
        """operand ((AND|OR|NOT)? operand)*, folded left to right."""
        node = self.operand()
        while True:
            kind, text, pos = self.peek()
            if kind is None or kind == "rparen":
                return node
            if kind == "op":
                self.take()
                nxt = self.peek()
                if nxt[0] is None or nxt[0] in ("rparen", "op"):
                    self.error(f"{text} needs a term after it", nxt[2] if nxt[0] else None)
                node = _BINARY[text](node, self.operand())
            else:
                node = And(node, self.operand())

    def operand(self) -> Node:
        kind, text, pos = self.peek()
        if kind == "op":
            self.error(f"{text} needs a term before it", pos)
        if kind == "tag":
            self.error(f"field tag {text} does not follow a term", pos)
        if kind == "rparen":
            self.error("unbalanced ')'", pos)
        if kind is None:
            self.error("the query ends where a term is expected")
        if kind == "lparen":
            self.take()
            if self.peek()[0] == "rparen":
                self.error("empty parentheses", self.peek()[2])
            node = self.expression()
            if self.peek()[0] != "rparen":
                self.error("unbalanced '(': no closing ')'", pos)
            self.take()
            return node
        if kind == "phrase":
            self.take()
            field = self.tag()
            inner = text[1:-1].strip()
            if not inner:
                self.error("empty quoted phrase", pos)
            if "*" in inner:
                self.error("truncation '*' inside a quoted phrase is not supported", pos)
            return self.leaf([(inner, pos)], field, quoted=True)
        words = []
        while self.peek()[0] == "word":
            words.append(self.take()[1:])
        return self.leaf(words, self.tag(), quoted=False)

    def tag(self) -> str:
        kind, text, pos = self.peek()
        if kind != "tag":
            return "all"
        self.take()
        name = " ".join(text[1:-1].lower().split())
        if name not in FIELD_TAGS:
            self.error(f"unknown field tag {text}; supported: [tiab] [ti] [ab] [mh] [pt] [au] [ot] "
                       f"[all] [dp]", pos)
        return FIELD_TAGS[name]

    def leaf(self, words: list[tuple[str, int]], field: str, quoted: bool) -> Node:
        if field == "dp":
            return self.date_range(" ".join(w for w, _ in words), words[0][1])
        if field in NAME_FIELDS or quoted:
            text = " ".join(w for w, _ in words)
            if "*" in text:
                self.error(f"truncation '*' is not supported in [{field}] names", words[0][1])
            return Term(text, field, phrase=True)
        node = None
        for word, pos in words:
            term = self.word(word, pos, field)
            node = term if node is None else And(node, term)
        return node

    def word(self, word: str, pos: int, field: str) -> Term:
        if "*" not in word:
            return Term(word, field)
        stem = word[:-1]
        if "*" in stem:
            self.error("'*' is allowed only at the end of a word", pos)
        if len(stem) < MIN_TRUNCATION_PREFIX:
            self.error(f"truncation needs at least {MIN_TRUNCATION_PREFIX} characters before '*'", pos)
        return Term(stem, field, truncated=True)

    def date_range(self, text: str, pos: int) -> DateRange:
        start, _, end = text.partition(":")
        try:
            lo = parse_date(start.strip())
            hi = parse_date((end or start).strip(), end=True)
        except ValueError as exc:
            self.error(f"bad publication date {text!r} ({exc})", pos)
        if lo > hi:
            self.error(f"publication date range {text!r} ends before it starts", pos)
        return DateRange(lo, hi)


def parse_query(query: str) -> Node:
    """The query's tree; raises QueryParseError with a message that says what and where."""
    return _Parser(query).parse()

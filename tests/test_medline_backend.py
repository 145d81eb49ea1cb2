"""Offline backend: Boolean semantics on hand-built records, every expected set derived by hand
from the records below (comments say why), plus ranking and the built-in corpus."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from deepretrieval.retrieval.medline_backend import MedlineBackend
from deepretrieval.retrieval.medline_corpus import MedlineRecord
from deepretrieval.retrieval.pubmed_query import QueryParseError
from deepretrieval.retrieval.search_backend import SearchBackend, SearchError

R = MedlineRecord
RECORDS = [
    R("1", "Aspirin for the prevention of myocardial infarction",
      "A randomized trial of aspirin in heart attack survivors.", keywords=("antiplatelet",),
      mesh=("Aspirin", "Myocardial Infarction"), pub_types=("Randomized Controlled Trial", "Journal Article"),
      authors=("Smith JA", "Lee K"), pub_date=dt.date(2010, 3, 15)),
    R("2", "Heart failure and attack rates",
      "Attack on the heart: heart failure outcomes in elderly patients.",
      mesh=("Heart Failure",), pub_types=("Review",), authors=("Smithson B",), pub_date=dt.date(2012, 6, 1)),
    R("3", "Tumour growth in mice", "Tumours grew faster under treatment.",
      mesh=("Neoplasms", "Mice"), pub_types=("Journal Article",), authors=("Smith J",),
      pub_date=dt.date(2015, 1, 1)),
    R("4", "Breast neoplasm screening", "Mammography screening of breast cancer in women.",
      keywords=("mammography",), mesh=("Breast Neoplasms", "Mass Screening"),
      pub_types=("Journal Article",), authors=("Garcia M",), pub_date=None),
    R("5", "Myocardial perfusion imaging", "Myocarditis and myocardium studies.",
      mesh=("Myocardium",), pub_types=("Journal Article",), authors=("Lee KH",),
      pub_date=dt.date(2018, 12, 31)),
    R("6", "Aspirin resistance review", "", pub_types=("Review",), authors=("Lee K",),
      pub_date=dt.date(2009, 12, 31)),
]


@pytest.fixture(scope="module")
def backend():
    return MedlineBackend(RECORDS)


@pytest.mark.parametrize("query, expected", [
    ("aspirin", {"1", "6"}),                       # 1: title/abstract/MeSH, 6: title
    ("aspirin[ti]", {"1", "6"}),
    ("aspirin[ab]", {"1"}),                        # 6 has no abstract
    ("aspirin[mh]", {"1"}),
    ('"heart attack"', {"1"}),                     # adjacent only in 1; 2 has "heart failure and attack"
    ("heart attack", {"1", "2"}),                  # bare words are ANDed
    ("heart AND attack", {"1", "2"}),
    ('"attack rate"[ti]', {"2"}),                  # phrases match on stems: "attack rates"
    ('"attack rate"[ab]', set()),
    ("tumour", {"3"}), ("tumours[ti]", {"3"}),     # stemming: tumour == tumours
    ("tumor", set()),                              # no spelling variants
    ("myocard*", {"1", "5"}),                      # myocardial (1, 5), myocarditis, myocardium (5)
    ("myocardi*[ab]", {"5"}),
    ("tumour OR aspirin AND review[pt]", {"6"}),   # left to right: (tumour OR aspirin) AND review
    ("tumour OR (aspirin AND review[pt])", {"3", "6"}),
    ("aspirin NOT review[pt]", {"1"}),
    ("aspirin NOT review[pt] OR tumour", {"1", "3"}),
    ("aspirin NOT (review[pt] OR tumour)", {"1"}),
    ("(heart OR tumour) AND (mice OR failure)", {"2", "3"}),
    ("neoplasms[mh]", {"3", "4"}),                 # a heading containing the words
    ('"breast neoplasms"[mh]', {"4"}),
    ("breast neoplasms[mh]", {"4"}),               # bare words before [mh] are one heading
    ('"aspirin myocardial"[mh]', set()),           # no phrase across two headings of record 1
    ("neoplasm[ti]", {"4"}),
    ("randomized controlled trial[pt]", {"1"}),
    ("review[pt]", {"2", "6"}),
    ("journal article[pt]", {"1", "3", "4", "5"}),
    ("smith[au]", {"1", "3"}),                     # Smith JA, Smith J; not Smithson B
    ("smith j[au]", {"1", "3"}),
    ("smith ja[au]", {"1"}),
    ("lee k[au]", {"1", "5", "6"}),                # Lee K (1, 6), Lee KH (5)
    ("lee kh[au]", {"5"}),
    ("smithson[au] OR garcia m[au]", {"2", "4"}),
    ("antiplatelet[tiab]", {"1"}),                 # [tiab] includes author keywords
    ("antiplatelet[ti]", set()),
    ("mammography[ot]", {"4"}),
    ("aspirin AND 2010[dp]", {"1"}),               # 6 is 2009-12-31
    ("2009:2012[dp]", {"1", "2", "6"}),
    ("2012/06:2015/01/01[pdat]", {"2", "3"}),
    ("journal article[pt] AND 2000:2030[dp]", {"1", "3", "5"}),   # 4 has no date
    ("the aspirin", {"1", "6"}),                   # stop words are ignored
    ("aspirin and review", {"6"}),                 # lower-case 'and' is a word (a stop word)
    ("tumour or aspirin", set()),                  # ... so this is tumour AND aspirin
    ("elderly[Title/Abstract] OR mice[MeSH Terms]", {"2", "3"}),
])
def test_boolean_semantics(backend, query, expected):
    assert backend.match(query) == expected
    assert sorted(backend.search(query, 100)) == sorted(expected)


@pytest.mark.parametrize("max_date, min_date, expected", [
    ("2015", None, {"1", "3"}),          # 4: no date; 5: 2018
    ("2015/01", None, {"1", "3"}),       # a partial upper bound covers its whole month
    ("2014-12-31", None, {"1"}),
    (None, "2015-01-01", {"3", "5"}),
    ("2016", "2011", {"3"}),
])
def test_date_limits(backend, max_date, min_date, expected):
    assert backend.match("journal article[pt]", max_date=max_date, min_date=min_date) == expected


def test_ranking_by_bm25_among_matches(backend):
    # "heart": record 2 has it three times (title, abstract twice), record 1 once.
    assert backend.search("heart") == ["2", "1"]
    # (heart OR neoplasms[mh]) NOT attack[ti] = {1, 3, 4}. Scored words: heart, neoplasm (not
    # attack: it is under NOT). 4 has the rarer "neoplasm" in a shorter text than 1's "heart";
    # 3 contains neither in title/abstract (it matched through MeSH), so it scores 0 and comes last.
    assert backend.search("heart OR neoplasms[mh] NOT attack[ti]") == ["4", "1", "3"]
    # [pt] is a filter: "review" does not score, though record 6's title contains it.
    assert backend.search("review[pt] OR tumour") == ["3", "2", "6"]
    ranked = backend.search("aspirin OR tumour", max_results=2)
    assert len(ranked) == 2 and set(ranked) <= {"1", "3", "6"}
    assert backend.search("aspirin", max_results=0) == []


@pytest.mark.parametrize("query, message", [
    ("", "empty query"),
    ("aspirin AND", "AND needs a term after it at character 12"),
    ("OR aspirin", "OR needs a term before it at character 1"),
    ("(aspirin OR heart", "unbalanced '(': no closing ')' at character 1"),
    ("aspirin)", "unbalanced ')' at character 8"),
    ('"heart attack', "unterminated quoted phrase"),
    ("aspirin[xyz]", "unknown field tag [xyz]; supported: [tiab] [ti] [ab] [mh] [pt] [au]"),
    ("asp*", "truncation needs at least 4 characters before '*'"),
    ("my*card", "'*' is allowed only at the end of a word"),
    ("heart AND ()", "empty parentheses"),
    ("[tiab]", "field tag [tiab] does not follow a term"),
    ("2015:2010[dp]", "ends before it starts"),
    ("the", "no searchable words"),
])
def test_parse_errors_are_clear(backend, query, message):
    with pytest.raises(QueryParseError, match=re.escape(message)) as info:
        backend.search(query)
    assert isinstance(info.value, SearchError)


def test_builtin_corpus_end_to_end():
    backend = MedlineBackend.builtin()
    assert isinstance(backend, SearchBackend) and len(backend) == 2399
    assert backend.search("asthma[tiab] AND (budesonide OR formoterol)") == ["29768149"]
    assert "29768149" not in backend.search("asthma", max_date="2018/05/16")
    assert backend.search("asthma", max_date="2018/05/17")[0] == "29768149"
    hits = backend.search("covid-19 OR sars-cov-2")
    assert len(hits) > 20 and len(set(hits)) == len(hits)

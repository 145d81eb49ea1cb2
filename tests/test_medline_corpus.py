"""MEDLINE XML parsing, checked on the shipped real records against the raw XML text itself."""
from __future__ import annotations

import datetime as dt
import gzip
import re

import pytest

from deepretrieval.retrieval.medline_corpus import (MedlineFormatError, builtin_corpus_path, iter_medline,
                                      load_medline)


@pytest.fixture(scope="module")
def raw_xml() -> str:
    return gzip.decompress(builtin_corpus_path().read_bytes()).decode("utf-8")


@pytest.fixture(scope="module")
def records():
    return list(iter_medline(builtin_corpus_path()))


def test_every_article_parsed_against_the_raw_text(raw_xml, records):
    articles = re.findall(r"<PubmedArticle\b[^>]*>(.*?)</PubmedArticle>", raw_xml, re.S)
    assert len(records) == len(articles) == 2401
    for rec, art in zip(records, articles):
        pmid = re.search(r"<MedlineCitation[^>]*>\s*<PMID[^>]*>(\d+)</PMID>", art).group(1)
        assert rec.pmid == pmid
        assert len(rec.mesh) == art.count("<DescriptorName")
        assert len(rec.pub_types) == art.count("<PublicationType ")
        assert bool(rec.abstract) == ("<AbstractText" in art)
    assert len(load_medline(builtin_corpus_path())) == 2399     # two PMIDs appear twice (updates)


def test_known_record_fields(records):
    rec = next(r for r in records if r.pmid == "29768149")
    assert rec.title == "Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma."
    assert rec.abstract.startswith("In patients with mild asthma, as-needed use of an inhaled "
                                   "glucocorticoid plus a fast-acting \u03b2 2-agonist")
    assert rec.abstract.count("\n") == 3                         # BACKGROUND METHODS RESULTS CONCLUSIONS
    assert rec.authors[:3] == ("O'Byrne PM", "FitzGerald JM", "Bateman ED")
    assert rec.journal == "The New England journal of medicine"
    assert rec.pub_date == dt.date(2018, 5, 17)
    assert len(rec.mesh) == 23 and rec.mesh[4:7] == ("Asthma", "Bronchodilator Agents", "Budesonide")
    assert "Randomized Controlled Trial" in rec.pub_types


def test_partial_and_medline_dates(tmp_path):
    xml = """<PubmedArticleSet>
      <PubmedArticle><MedlineCitation><PMID>1</PMID><Article><Journal><JournalIssue><PubDate>
        <MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue></Journal>
        <ArticleTitle>A <i>b</i>  c</ArticleTitle></Article></MedlineCitation></PubmedArticle>
      <PubmedArticle><MedlineCitation><PMID>2</PMID><Article><Journal><JournalIssue><PubDate>
        <Year>2020</Year><Month>Mar</Month></PubDate></JournalIssue></Journal>
        <ArticleTitle>t</ArticleTitle><ArticleDate><Year>2020</Year><Month>02</Month><Day>27</Day>
        </ArticleDate><AuthorList><Author><CollectiveName>The X Group</CollectiveName></Author>
        </AuthorList></Article></MedlineCitation></PubmedArticle>
      <PubmedBookArticle><BookDocument><PMID>3</PMID></BookDocument></PubmedBookArticle>
    </PubmedArticleSet>"""
    path = tmp_path / "x.xml"
    path.write_text(xml)
    a, b = list(iter_medline(path))
    assert (a.pmid, a.title, a.pub_date) == ("1", "A b c", dt.date(1998, 12, 1))
    assert (b.pub_date, b.authors) == (dt.date(2020, 2, 27), ("The X Group",))   # earlier: electronic


def test_bad_files_raise_naming_the_file(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<PubmedArticleSet><PubmedArticle><MedlineCitation>")
    with pytest.raises(MedlineFormatError, match="broken.xml: not well-formed MEDLINE XML"):
        list(iter_medline(broken))
    nopmid = tmp_path / "nopmid.xml"
    nopmid.write_text("<PubmedArticleSet><PubmedArticle><MedlineCitation/></PubmedArticle></PubmedArticleSet>")
    with pytest.raises(MedlineFormatError, match="nopmid.xml: a PubmedArticle without MedlineCitation/PMID"):
        list(iter_medline(nopmid))
    notgz = tmp_path / "fake.xml.gz"
    notgz.write_text("plain")
    with pytest.raises(MedlineFormatError, match="fake.xml.gz: cannot read"):
        list(iter_medline(notgz))

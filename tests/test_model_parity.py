"""Our decoder against transformers: same random weights (save_pretrained -> our loader), same
logits on a padded batch, per family; and our HF export loaded back by transformers."""
from __future__ import annotations

import json

import pytest
import torch

from deepretrieval.model.config import ModelConfig
from deepretrieval.model.hf_weights import load_hf, save_hf
from model_helpers import hf_logits, padded_batch, tiny_hf_model

FAMILIES = ["qwen2-tied", "qwen2", "qwen3", "llama", "llama3-rope"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(family, tmp_path):
    hf = tiny_hf_model(family)
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path)
    ids, mask = padded_batch(ours.cfg.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        got = ours(ids, mask)
    want = hf_logits(hf, ids, mask)
    assert got.dtype == torch.float32 and got.shape == want.shape == (3, 12, 256)
    assert (got - want)[real].abs().max().item() <= 1e-4
    assert want[real].std() > 0.1                       # a real signal, not all-zero logits
    assert torch.isfinite(got).all()                     # pad positions are garbage but finite
    # Without a mask the same model is plain causal: row 1 (no padding) gives the same logits.
    with torch.no_grad():
        assert (ours(ids[1:2]) - want[1:2]).abs().max().item() <= 1e-4


def test_family_switches_are_read(tmp_path):
    cfgs = {}
    for family in FAMILIES:
        tiny_hf_model(family).config.save_pretrained(tmp_path / family)
        cfgs[family] = ModelConfig.from_file(tmp_path / family)
    assert cfgs["qwen2"].qkv_bias and not cfgs["qwen2"].o_bias and not cfgs["qwen2"].qk_norm
    assert cfgs["qwen2-tied"].tie_word_embeddings and not cfgs["qwen2"].tie_word_embeddings
    assert cfgs["qwen3"].qk_norm and cfgs["qwen3"].head_dim == 32 and not cfgs["qwen3"].qkv_bias
    assert cfgs["llama"].rope_scaling is None and cfgs["llama"].num_kv_heads == 2
    s = cfgs["llama3-rope"].rope_scaling
    assert (s.factor, s.original_max_position_embeddings, cfgs["llama3-rope"].rope_theta) == (8.0, 16, 500000.0)


def test_llama3_rope_scaling_matters(tmp_path):
    """The llama3 parity above is not vacuous: dropping the scaling changes the logits."""
    hf = tiny_hf_model("llama3-rope")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_scaling", None)
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    unscaled = load_hf(tmp_path)
    ids, mask = padded_batch(256)
    with torch.no_grad():
        diff = (unscaled(ids, mask) - hf_logits(hf, ids, mask))[mask.bool()].abs().max().item()
    assert diff > 1e-3


def test_legacy_config_keys(tmp_path):
    """Hub configs (Qwen2.5, Llama-3.2) carry rope_theta / rope_scaling, not rope_parameters."""
    d = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "head_dim": 16,
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    cfg = ModelConfig.from_hf_dict(d)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling.factor == 32.0
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_sharded_checkpoint_loads(tmp_path):
    hf = tiny_hf_model("qwen2")
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    ours = load_hf(tmp_path)
    ids, mask = padded_batch(256)
    with torch.no_grad():
        assert (ours(ids, mask) - hf_logits(hf, ids, mask))[mask.bool()].abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["qwen2-tied", "qwen3", "llama3-rope"])
def test_export_round_trip(family, tmp_path):
    """Our save_hf -> transformers.from_pretrained -> the same logits as our model."""
    import transformers
    tiny_hf_model(family).save_pretrained(tmp_path / "src")
    ours = load_hf(tmp_path / "src")
    save_hf(ours, tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    assert type(back).__name__ == {"qwen2-tied": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                                   "llama3-rope": "LlamaForCausalLM"}[family]
    ids, mask = padded_batch(256, seed=1)
    with torch.no_grad():
        assert (ours(ids, mask) - hf_logits(back, ids, mask))[mask.bool()].abs().max().item() <= 1e-4
    assert ModelConfig.from_file(tmp_path / "export") == ours.cfg


def test_load_into_bfloat16(tmp_path):
    """Weights land directly in the asked dtype; bf16 logits stay close to fp32."""
    tiny_hf_model("qwen2").save_pretrained(tmp_path)
    fp32, bf16 = load_hf(tmp_path), load_hf(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert not any(p.requires_grad for p in bf16.parameters())
    ids, mask = padded_batch(256)
    with torch.no_grad():
        a, b = fp32(ids, mask), bf16(ids, mask)
    assert b.dtype == torch.float32
    assert (a - b)[mask.bool()].abs().max().item() < 0.1

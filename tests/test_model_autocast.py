"""The model under autocast with fp32 weights (the trainer's bf16 mode): the residual stream is in
the autocast dtype, as in a bf16 model. Reference: the same model without autocast."""
from __future__ import annotations

import torch

from deepretrieval.model.config import ModelConfig
from deepretrieval.model.transformer import Transformer


def test_residual_stream_in_autocast_dtype():
    cfg = ModelConfig(model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=96,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True,
                      rms_norm_eps=1e-6, rope_theta=10000.0)
    torch.manual_seed(0)
    model = Transformer(cfg)
    seen = []
    model.layers[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    ids = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        ref = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids)
    assert seen == [torch.float32, torch.bfloat16]
    assert ref.std() > 0.1                                      # a real signal
    torch.testing.assert_close(low, ref, rtol=0, atol=0.05 * ref.abs().max().item())

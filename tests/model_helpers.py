"""Tiny random transformers models for the model/ tests (transformers is the reference)."""
from __future__ import annotations

import torch

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=512)
# Qwen2.5-0.5B (Qwen/Qwen2.5-0.5B-Instruct config.json), for tests with random weights at real shapes
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, tie_word_embeddings=True)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}


def tiny_hf_config(family: str):
    import transformers as T
    if family == "qwen2-tied":
        return T.Qwen2Config(tie_word_embeddings=True, **TINY)
    if family == "qwen2":
        return T.Qwen2Config(tie_word_embeddings=False, **TINY)
    if family == "qwen3":   # head_dim deliberately not hidden / heads
        return T.Qwen3Config(head_dim=32, tie_word_embeddings=False, **TINY)
    if family == "llama":
        return T.LlamaConfig(tie_word_embeddings=False, rope_theta=10000.0, **TINY)
    if family == "llama3-rope":
        return T.LlamaConfig(tie_word_embeddings=True, rope_parameters={"rope_theta": 500000.0, **LLAMA3_ROPE}, **TINY)
    raise ValueError(family)


def tiny_hf_model(family: str, seed: int = 0):
    """A random transformers model whose biases and norm weights are non-trivial too (HF inits
    them to 0 and 1, which would hide a missing bias or a swapped norm)."""
    import transformers as T
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(tiny_hf_config(family), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.2 * torch.randn_like(p))
    return model


def padded_batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask [3, 12]: left-padded, full, right-padded rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :5] = 0
    mask[2, 8:] = 0
    return ids, mask


def hf_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HF logits with the positions our decoder uses (cumsum of the mask), as HF's generate does."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()


def full_forward_logprobs(model, prompts, out, temperature: float, pad: int):
    """What the RL trainer does with a generation `out`: one forward over [left-padded prompt |
    right-padded response] -> (log-probs [B, N] of the generated tokens, mask [B, N] of real ones).
    The LM head runs on the response positions only (a [B, P+N, V] fp32 tensor is large)."""
    from deepretrieval.model.sampler import token_logprobs
    dev = out.tokens.device
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    N = out.tokens.shape[1]
    resp_mask = (torch.arange(N, device=dev)[None] < out.lengths[:, None]).long()
    with torch.no_grad():
        hidden = model.forward_hidden(torch.cat([ids.to(dev), out.tokens], 1), torch.cat([mask.to(dev), resp_mask], 1))
        logits = model.logits(hidden[:, P - 1:-1])                                         # [B, N, V]
    return token_logprobs(logits, out.tokens, temperature), resp_mask.bool()

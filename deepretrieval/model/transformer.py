"""One decoder for the Qwen2/Qwen2.5, Qwen3 and Llama (SmolLM2, Llama-3.x) families.

    from deepretrieval.model.transformer import Transformer
    model = Transformer(cfg)                                   # random init; loaders build it on meta
    logits = model(input_ids, attention_mask)                  # [B, T, V] float32
    hidden = model.forward_hidden(input_ids, attention_mask)   # [B, T, C] (after the final norm)

Pre-norm blocks: x + Attn(RMSNorm(x)), then h + SwiGLU(RMSNorm(h)). Attention is grouped-query
(H query heads share H_kv key/value heads) with rotary embeddings, optional q/k/v bias (Qwen2),
optional per-head q/k RMSNorm (Qwen3), computed by `scaled_dot_product_attention`.

Masks and positions. `attention_mask [B, T]` (1 = real token, 0 = padding) may pad on the left
or on the right. RoPE positions are `cumsum(mask) - 1`, so a left-padded row starts at position 0
at its first real token, as in HF's generate. Padded keys are never attended to; a padded query
attends only to itself (so it stays finite and cannot leak NaNs into real rows), and its output
is meaningless: compare or train on real positions only.

Numerics follow transformers op for op (RMSNorm in fp32 then cast back; RoPE angles in fp32 then
cast to the activation dtype), so fp32 logits match to ~1e-5 and bf16 runs make the same greedy
choices. Logits are returned in float32: the LM head runs in the model dtype and is upcast, so the
sampler and the RL trainer see the same numbers.

RMSNorm and the RoPE rotation are defined once, in kernels/: this forward (prefill, training,
the eager decode step) calls their PyTorch references (`kernels.rmsnorm.rmsnorm_reference`,
`kernels.rope.apply_rope`), which are differentiable and round where transformers does; the fast
decode step (model/fast_decode.py) calls the dispatchers of the same ops, which pick the Triton
kernels on CUDA. Attention here is `sdpa_attention` (scaled_dot_product_attention); the fast
decode step attends with kernels/decode_attention.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepretrieval.kernels.rmsnorm import rmsnorm_reference
from deepretrieval.kernels.rope import apply_rope
from deepretrieval.kernels.silu_mul import silu_mul_reference
from deepretrieval.model.config import ModelConfig
from deepretrieval.model.kv_cache import KVCache


# ------------------------------------------------------------------ ops
def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, H_kv, S, D], mask [B, 1, T, S] bool (True = attend) or None
    (plain causal, T == S) -> [B, H, T, D]. H must be a multiple of H_kv (GQA).

    GQA is dispatched as transformers does, so both pick the same SDPA backends: without a mask
    SDPA's own `enable_gqa`; one query token (decode) folds each KV head's G query heads into G
    query rows, so K/V are never copied; otherwise K/V heads are repeated.
    """
    B, H, T, D = q.shape
    G = H // k.shape[1]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=G > 1)
    if G > 1 and T == 1:
        y = F.scaled_dot_product_attention(q.reshape(B, H // G, G, D), k, v, attn_mask=mask)   # [B, H_kv, G, D]
        return y.reshape(B, H, 1, D)
    if G > 1:
        k = k[:, :, None].expand(-1, -1, G, -1, -1).flatten(1, 2)          # [B, H, S, D]
        v = v[:, :, None].expand(-1, -1, G, -1, -1).flatten(1, 2)          # [B, H, S, D]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def rope_inv_freq(cfg: ModelConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies [D/2] in fp32, with Llama-3's scaling when the config asks for it."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = ((s.original_max_position_embeddings / wavelen - s.low_freq_factor)
              / (s.high_freq_factor - s.low_freq_factor))
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


# ------------------------------------------------------------------ modules
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:              # [..., dim] -> [..., dim]
        return rmsnorm_reference(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.hidden_size, cfg.q_size, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, start: int):
        """x [B, T, C], cos/sin [B, 1, T, D], mask as `sdpa_attention`'s -> [B, T, C]."""
        B, T, _ = x.shape                                                  # x [B, T, C]
        q = self.wq(x).view(B, T, self.num_heads, self.head_dim)          # [B, T, H, D]
        k = self.wk(x).view(B, T, self.num_kv_heads, self.head_dim)       # [B, T, H_kv, D]
        v = self.wv(x).view(B, T, self.num_kv_heads, self.head_dim)       # [B, T, H_kv, D]
        if self.q_norm is not None:                                        # Qwen3: per-head RMSNorm
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)                        # [B, H, T, D]
        k = apply_rope(k.transpose(1, 2), cos, sin)                        # [B, H_kv, T, D]
        v = v.transpose(1, 2)                                              # [B, H_kv, T, D]
        if cache is not None:
            k, v = cache.update(layer, start, k, v)                        # [B, H_kv, S, D]
        y = sdpa_attention(q, k, v, mask)                                  # [B, H, T, D]
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))               # [B, T, C]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):                                                  # [B, T, C] -> [B, T, C]
        return self.down(silu_mul_reference(self.gate(x), self.up(x)))    # SwiGLU, [B, T, F] inside


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, start: int):
        h = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return h + self.mlp(self.mlp_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # Tied models have no head of their own: `logits` reuses the embedding matrix.
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._inv_freq: torch.Tensor | None = None   # fp32, kept out of state_dict and of .to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, sin [B, T, D], angles in fp32 then cast to `dtype`."""
        if self._inv_freq is None or self._inv_freq.device != positions.device:
            self._inv_freq = rope_inv_freq(self.cfg, positions.device)
        freqs = positions[..., None].float() * self._inv_freq            # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)                           # [B, T, D]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       kv_cache: KVCache | None = None) -> torch.Tensor:
        """input_ids [B, T], attention_mask [B, T] (1 real, 0 pad; None = all real) -> hidden [B, T, C].

        With `kv_cache`, the T tokens are appended after the cache's `length` written slots and
        attend to every valid cached key; positions continue from each row's real-token count.
        """
        B, T = input_ids.shape
        dev = input_ids.device
        real = None if attention_mask is None else attention_mask.bool()   # [B, T]
        start = 0
        if kv_cache is not None:
            real_or_all = real if real is not None else torch.ones(B, T, dtype=torch.bool, device=dev)
            positions = kv_cache.positions(real_or_all)                     # [B, T]
            start, end = kv_cache.reserve(real_or_all)
            key_valid = kv_cache.valid[:, :end]                             # [B, S]
            plain_causal = real is None and start == 0
        else:
            end = T
            if real is None:
                positions = torch.arange(T, device=dev).expand(B, T)       # [B, T]
            else:
                positions = (real.long().cumsum(-1) - 1).clamp(min=0)
            key_valid = real
            plain_causal = real is None
        mask = None if plain_causal else self._attention_mask(key_valid, start, end)
        x = self.embed(input_ids)                                           # [B, T, C]
        if torch.is_autocast_enabled(dev.type):
            # Every matmul under autocast returns its dtype, and the residual stream follows (as in
            # a bf16 model, Megatron's default, and the sampler's bf16 copy) rather than fp32 adds
            # and norms started by fp32 master-weight embeddings.
            x = x.to(torch.get_autocast_dtype(dev.type))
        cos, sin = (t[:, None] for t in self.rope(positions, x.dtype))      # [B, 1, T, D]: one for all heads
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, kv_cache, i, start)
        return self.norm(x)                                                 # [B, T, C]

    @staticmethod
    def _attention_mask(key_valid: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """key_valid [B, S] -> [B, 1, T, S] bool for queries in slots [start, end) over keys [0, end)."""
        q_slot = torch.arange(start, end, device=key_valid.device)[:, None]    # [T, 1]
        k_slot = torch.arange(end, device=key_valid.device)[None, :]           # [1, S]
        allowed = (k_slot <= q_slot)[None] & key_valid[:, None, :]              # [B, T, S] causal, real keys
        allowed = allowed | (k_slot == q_slot)[None]                            # a pad query sees itself
        return allowed[:, None]                                                 # [B, 1, T, S]

    @property
    def head_weight(self) -> torch.Tensor:
        """The LM head's [V, C] weight: lm_head's, or the embedding matrix of a tied model."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., C] -> logits [..., V] float32 (head in the model dtype, then upcast)."""
        return F.linear(hidden, self.head_weight).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """input_ids [B, T], attention_mask [B, T] or None -> logits [B, T, V] float32."""
        return self.logits(self.forward_hidden(input_ids, attention_mask, kv_cache))

"""Static, preallocated key/value cache for batched generation.

    cache = KVCache.allocate(cfg, batch=B, max_len=prompt_len + max_new_tokens, dtype=..., device=...)
    logits = model(prompt_ids, attention_mask, kv_cache=cache)     # prefill: fills slots [0, P)
    logits = model(next_ids[:, None], alive[:, None], kv_cache=cache)  # one decode step: slot P, ...

Layout: `k`, `v` are `[L, B, H_kv, S_max, D]`, allocated once, sized to what this batch needs
(never a model's maximum context). Every row of the batch writes the same slot at each step
(`length` is a host int: no device sync to know where to write). Which slots hold real tokens
is per row: `valid [B, S_max]` is False for padding (left-padded prompts, finished sequences),
so attention ignores those keys. `next_pos [B]` is each row's next RoPE position, i.e. the
number of real tokens it has seen: padding does not advance positions, exactly as HF's
`position_ids = cumsum(attention_mask) - 1`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from deepretrieval.model.config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor          # [L, B, H_kv, S_max, D]
    v: torch.Tensor          # [L, B, H_kv, S_max, D]
    valid: torch.Tensor      # [B, S_max] bool: slot holds a real token
    next_pos: torch.Tensor   # [B] long: RoPE position of the row's next real token
    length: int = 0          # slots [0, length) are written (same for every row)

    @classmethod
    def allocate(cls, cfg: ModelConfig, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str) -> "KVCache":
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        return cls(
            k=torch.zeros(shape, dtype=dtype, device=device),
            v=torch.zeros(shape, dtype=dtype, device=device),
            valid=torch.zeros(batch, max_len, dtype=torch.bool, device=device),
            next_pos=torch.zeros(batch, dtype=torch.long, device=device),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def head(self, rows: int) -> "KVCache":
        """A cache over this one's first `rows` rows (views: what it writes lands here)."""
        return KVCache(self.k[:, :rows], self.v[:, :rows], self.valid[:rows], self.next_pos[:rows],
                       self.length)

    def copy_rows(self, source: torch.Tensor) -> None:
        """Row i becomes a copy of row source[i] for i < len(source) (its written slots, validity and
        position), in place: a prompt prefilled once serves every row that repeats it, and rows still
        decoding move to the front when finished ones leave the batch."""
        n, m = self.length, len(source)
        for layer in range(self.k.shape[0]):       # one layer's gather at a time: [m, H_kv, n, D]
            self.k[layer, :m, :, :n] = self.k[layer, source, :, :n]
            self.v[layer, :m, :, :n] = self.v[layer, source, :, :n]
        self.valid[:m, :n] = self.valid[source, :n]
        self.next_pos[:m] = self.next_pos[source]

    def positions(self, mask: torch.Tensor) -> torch.Tensor:
        """RoPE positions [B, T] of T new tokens whose validity is `mask` [B, T] (bool)."""
        return self.next_pos[:, None] + (mask.long().cumsum(-1) - 1).clamp(min=0)

    def reserve(self, mask: torch.Tensor) -> tuple[int, int]:
        """Mark T new slots (validity `mask` [B, T]) and return their range (start, end).

        Called once per forward, before the layers write their keys/values into [start, end).
        """
        start, end = self.length, self.length + mask.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} slots needed, {self.max_len} allocated")
        self.valid[:, start:end] = mask
        self.next_pos += mask.sum(-1)
        self.length = end
        return start, end

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H_kv, T, D] at slots [start, start+T) of `layer`; return the keys/values of
        all written slots, [B, H_kv, start+T, D] each (views into the cache, no copy)."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

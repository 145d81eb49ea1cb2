"""Fast decoding for `model.sampler.generate`: Triton kernels, static state, one CUDA graph per step.

    out = generate(model, prompts, params, pad_token_id=0, seed=0)          # on CUDA: this path
    out = generate(model, prompts, params, pad_token_id=0, cuda_graphs=False)   # same kernels, no graph
    out = generate(model, prompts, params, pad_token_id=0, fast=False)      # the eager reference path
    release(model)                                                         # free the cached decoder

One decode step (`FastDecoder._body`: one token per row, static shapes):
  embed -> per layer: RMSNorm fused with the residual add, q/k/v projections (q/k RMSNorm for
  Qwen3), RoPE of q and k from position tables, k/v written into the static cache at `slot`,
  split-K GQA decode attention over each row's [kv_start, kv_end), o-projection, RMSNorm +
  residual, SwiGLU -> final norm -> LM head -> fused sampling from a static noise buffer -> the
  sampler's `StepOutputs.record` -> `slot`, `kv_end`, `positions` bumped in place.
Everything that changes between steps is a device tensor that the step advances itself, so on CUDA
the step is captured once in a CUDA graph and replayed with no host input: the host loop only
refills the noise from the torch.Generator (outside the graph, so any generator works) and reads
the "every row has stopped" flag every `sync_every` steps. The first decode step runs eagerly on a
side stream (it compiles the Triton kernels and warms cuBLAS) and is then captured for the rest.
The same step runs eagerly on any device (the kernels' dispatchers pick the PyTorch references
off CUDA), which is how the CPU tests check this path.

Static shapes: the batch is padded to a bucket (1, 2, 4, ..., 128, then multiples of 128) with
copies of the first prompt that are marked finished from the start; the cache holds
round_up(prompt_len + max_new_tokens, SEQ_ROUND) slots, never a model's maximum context. Prefill
is the model's own forward (scaled_dot_product_attention) writing into that static cache. Rows
that stopped keep decoding over their own range (static shapes); the recorder masks their tokens,
as on the eager path.

One decoder (buffers, cache, graph) is kept per model and reused by the next call with the same
bucket, cache length, sampling parameters, pad id and weight storage; anything else builds a new
one (a replaced weight tensor can never be read through a stale graph).
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from kernels.decode_attention import decode_attention, kv_range_from_mask
from kernels.rmsnorm import rmsnorm
from kernels.rope import rope
from kernels.sampling import sample
from model.kv_cache import KVCache
from model.transformer import Attention, RMSNorm, Transformer

SEQ_ROUND = 128          # cache slots are rounded up to a multiple of this, so calls can share a graph
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model -> FastDecoder


def batch_bucket(n: int) -> int:
    """Rows the decoder runs for n prompts: the next power of two up to 128, then multiples of 128."""
    if n <= 128:
        return 1 << (n - 1).bit_length()
    return -(-n // 128) * 128


def unsupported_reason(model) -> str | None:
    """Why `model` cannot take the fast path, or None when it can."""
    if not isinstance(model, Transformer):
        return f"{type(model).__name__} is not a model.transformer.Transformer"
    d = model.cfg.head_dim
    if d < 16 or d & (d - 1):
        return f"head_dim {d} is not a power of two >= 16, as the decode attention kernel needs"
    return None


def release(model: Transformer) -> None:
    """Drop the decoder cached for `model` (its KV cache, buffers and graph memory)."""
    _DECODERS.pop(model, None)


def decoder_for(model: Transformer, rows: int, max_len: int, params, pad_token_id: int, cuda_graphs: bool,
                new_outputs: Callable[[], object]) -> "FastDecoder":
    """The cached decoder for this call's shapes and settings, or a new one (`new_outputs()` gives
    its `model.sampler.StepOutputs`, which the graph writes into)."""
    max_len = -(-max_len // SEQ_ROUND) * SEQ_ROUND
    key = (rows, max_len, params, pad_token_id, cuda_graphs, model.dtype,
           tuple(p.data_ptr() for p in model.parameters()))
    decoder = _DECODERS.get(model)
    if decoder is None or decoder.key != key:
        decoder = None
        release(model)                                   # free the old buffers before allocating
        decoder = _DECODERS[model] = FastDecoder(model, rows, max_len, params, new_outputs(), cuda_graphs, key)
    return decoder


def _norm(x: torch.Tensor, norm: RMSNorm, residual: torch.Tensor | None):
    """(RMSNorm(x + residual), x + residual) in one kernel; the first norm of a step has no residual."""
    if residual is None:
        return rmsnorm(x, norm.weight, norm.eps), x
    return rmsnorm(x, norm.weight, norm.eps, residual=residual)


class FastDecoder:
    """Static decode state for `rows` sequences and `max_len` cache slots; see the module docstring.

    Protocol shared with the sampler's eager decoder: `out` (StepOutputs), `start(logits, cache,
    generator)` samples the first token from the prefill logits, `step()` decodes one more."""

    def __init__(self, model: Transformer, rows: int, max_len: int, params, out, cuda_graphs: bool, key):
        cfg, dev = model.cfg, model.device
        self.key, self.params, self.out = key, params, out
        self._model = weakref.ref(model)               # the cache entry must not keep its key alive
        shape = (cfg.num_layers, rows, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=model.dtype, device=dev)          # [L, B, H_kv, S, D]
        self.v = torch.zeros(shape, dtype=model.dtype, device=dev)
        cos, sin = model.rope(torch.arange(max_len, device=dev)[None], torch.float32)
        self.cos, self.sin = cos[0], sin[0]                                 # [S, D] fp32, by position
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)       # the last sampled token
        self.positions = torch.zeros(rows, dtype=torch.long, device=dev)    # its RoPE position
        self.kv_start = torch.zeros(rows, dtype=torch.int32, device=dev)    # first valid slot
        self.kv_end = torch.zeros(rows, dtype=torch.int32, device=dev)      # one past the last written
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)            # the slot the next step writes
        self.uniform = (None if params.temperature == 0 else
                        torch.zeros(rows, cfg.vocab_size, dtype=torch.float32, device=dev))   # [B, V]
        self.use_graph = cuda_graphs and dev.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.generator: torch.Generator | None = None

    def new_cache(self) -> KVCache:
        """A KVCache over the static k/v for the prefill, with fresh validity and positions."""
        rows, max_len = self.k.shape[1], self.k.shape[3]
        dev = self.k.device
        return KVCache(self.k, self.v, valid=torch.zeros(rows, max_len, dtype=torch.bool, device=dev),
                       next_pos=torch.zeros(rows, dtype=torch.long, device=dev))

    def start(self, logits: torch.Tensor, cache: KVCache, generator: torch.Generator | None) -> None:
        """Take the state after the prefill into `cache` and sample the first token from `logits` [B, V]."""
        self.generator = generator
        kv_start, kv_end = kv_range_from_mask(cache.valid)     # left padding: one run of real slots per row
        self.kv_start.copy_(kv_start)
        self.kv_end.copy_(kv_end)
        self.positions.copy_(cache.next_pos)
        self.slot.fill_(cache.length)
        self._refill_noise()
        self._sample(logits)

    def step(self) -> None:
        self._refill_noise()
        if self.graph is not None:
            self.graph.replay()
        elif self.use_graph:
            self._capture()
        else:
            self._body()

    # ------------------------------------------------------------------ internals
    def _refill_noise(self) -> None:
        if self.uniform is not None:
            self.uniform.uniform_(generator=self.generator)

    def _sample(self, logits: torch.Tensor) -> None:
        p = self.params
        ids, logprobs = sample(logits, self.uniform, p.temperature, p.top_k, p.top_p)   # [B], [B]
        self.out.record(ids, logprobs)
        self.tokens.copy_(ids)

    def _body(self) -> None:
        model = self._model()
        if model is None:
            raise RuntimeError("FastDecoder: its model was garbage-collected")
        self.kv_end += 1                                    # the slot this step writes becomes visible
        x = model.embed(self.tokens)                                         # [B, C]
        residual = None
        for i, layer in enumerate(model.layers):
            h, residual = _norm(x, layer.attn_norm, residual)
            x = self._attention(layer.attn, h, i)
            h, residual = _norm(x, layer.mlp_norm, residual)
            x = layer.mlp(h)
        h, _ = _norm(x, model.norm, residual)
        self.slot += 1
        self.positions += 1
        self._sample(model.logits(h))                                        # logits [B, V] fp32

    def _attention(self, attn: Attention, h: torch.Tensor, layer: int) -> torch.Tensor:
        B = h.shape[0]
        q = attn.wq(h).view(B, 1, attn.num_heads, attn.head_dim)            # [B, 1, H, D]
        k = attn.wk(h).view(B, 1, attn.num_kv_heads, attn.head_dim)         # [B, 1, H_kv, D]
        v = attn.wv(h).view(B, attn.num_kv_heads, 1, attn.head_dim)         # [B, H_kv, 1, D]
        if attn.q_norm is not None:                                          # Qwen3
            q, k = attn.q_norm(q, rmsnorm), attn.k_norm(k, rmsnorm)
        q, k = rope(q, k, self.cos, self.sin, self.positions[:, None])
        self.k[layer].index_copy_(2, self.slot, k.transpose(1, 2))          # slot of [B, H_kv, S, D]
        self.v[layer].index_copy_(2, self.slot, v)
        y = decode_attention(q[:, 0], self.k[layer], self.v[layer], self.kv_start, self.kv_end)   # [B, H, D]
        return attn.wo(y.reshape(B, -1))                                    # [B, C]

    def _capture(self) -> None:
        """Run this step eagerly on a side stream (compiles the Triton kernels, warms cuBLAS), then
        record it (capture runs nothing) for every later step to replay."""
        dev = self.k.device
        with torch.cuda.device(dev):
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                self._body()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    self._body()
            except RuntimeError as exc:
                raise RuntimeError(f"CUDA graph capture of the decode step failed: {exc}\n"
                                   "generate(..., cuda_graphs=False) runs the same kernels without a graph") from exc
        self.graph = graph

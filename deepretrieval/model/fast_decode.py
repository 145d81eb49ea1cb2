"""Fast decoding for `deepretrieval.model.sampler.generate`: Triton kernels, static state, one CUDA graph per step.

    out = generate(model, prompts, params, pad_token_id=0, seed=0)          # on CUDA: this path
    out = generate(model, prompts, params, pad_token_id=0, cuda_graphs=False)   # same kernels, no graph
    out = generate(model, prompts, params, pad_token_id=0, fast=False)      # the eager reference path
    release(model)                                                         # free the cached decoder

One decode step (`FastDecoder._body`: one token per row, static shapes):
  embed -> per layer: RMSNorm fused with the residual add, q/k/v projections (q/k RMSNorm for
  Qwen3), RoPE of q and k from position tables with k/v written into the static cache at `slot`
  (one kernel), split-K GQA decode attention over each row's [kv_start, kv_end), o-projection,
  RMSNorm + residual, SwiGLU -> final norm, LM head and sampling from a static noise buffer
  (kernels/head_sample.py; above 16 rows one pass that never writes the logits) -> the sampler's
  `StepOutputs.record`, which in the same launch makes the samples the next
  input and bumps `slot`, `kv_end`, `positions` in place (kernels/record_step.py).
  At most `deepretrieval.kernels.fused_linear.MAX_ROWS` (16) rows, the layer is 7 kernels:
  the projections are fused GEMVs that fold in the RMSNorm before them and the bias, SiLU-gate and
  residual add after them, then RoPE + cache write, the attention's split and reduce
  (`_layers_fused`); at one row the qkv GEMV also does the RoPE and the cache write
  (kernels/qkv_rope_cache.py), 6 kernels; these are kernels.decode_layer's per-op path. Up to 64
  rows its layer kernel runs the layer as 7-8 stages of one Triton kernel (see there;
  DEEPRETRIEVAL_LAYER_KERNEL overrides). More rows (and Qwen3's q/k norms) take cuBLAS
  matmuls with the small kernels between them (`_layers`), 10 launches a layer: q/k/v and gate/up
  each in one matmul over weights laid side by side (`MergedProjections`, a copy refreshed at the
  start of every call), SiLU-gate in one kernel (kernels/silu_mul.py). Launch overhead, not
  bandwidth, is what a decode step of a small model is made of.
Everything that changes between steps is a device tensor that the step advances itself, so on CUDA
the step is captured once in a CUDA graph and replayed with no host input: the host loop only
refills the noise from the torch.Generator (outside the graph, so any generator works) and reads
which rows have stopped every `sync_every` steps. The first decode step runs eagerly on a
side stream (it compiles the Triton kernels and warms cuBLAS) and is then captured for the rest.
The same step runs eagerly on any device (the kernels' dispatchers pick the PyTorch references
off CUDA), which is how the CPU tests check this path.

The prefill is the model's own forward. At a few rows (at most `PREFILL_GRAPH_MAX_ROWS`) it is bound by
the host launching ~33 small kernels a layer (measured on an H100 at batch 1, prompt 128: 15.5 ms
to enqueue 2.8 ms of GPU work at Qwen2.5-0.5B shapes, 28 ms for 6.5 ms at 3B), so there it is
captured in a CUDA graph too, once two calls in a row bring prompts of the same shape (a capture
costs about one more eager prefill: not worth it for a shape seen once), and replayed while
prompts keep that shape.

Static shapes: the batch is padded to a bucket (1, 2, 4, ..., 128, then multiples of 128) with
copies of the first prompt that are marked finished from the start; the cache holds
round_up(prompt_len + max_new_tokens, SEQ_ROUND) slots, never a model's maximum context. Prefill
is the model's own forward (scaled_dot_product_attention) writing into that static cache. Rows
that stopped keep decoding over their own range (static shapes) until the next check, the recorder
masking their tokens as on the eager path; at the check, once the rows still decoding fit a smaller
bucket, `narrow` moves them (cache rows, counters) to the front of the static tensors and the steps
after run that bucket only, with a graph of their own captured over those views.

One decoder (buffers, cache, graph) is kept per model and reused by the next call with the same
bucket, cache length, sampling parameters, pad id and weight storage; anything else builds a new
one (a replaced weight tensor can never be read through a stale graph). On Hopper the step's
kernels overlap through programmatic dependent launch (kernels/pdl_triton.py).
"""
from __future__ import annotations

import functools
import os
import weakref
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from deepretrieval.kernels import use_pdl
from deepretrieval.kernels.decode_attention import decode_attention, kv_range_from_mask
from deepretrieval.kernels.decode_layer import LAYER_SYNC_WORDS, LayerWeights, decode_layers, layer_kernel_mode
from deepretrieval.kernels.fused_linear import MAX_ROWS as FUSED_MAX_ROWS
from deepretrieval.kernels.head_sample import head_sample
from deepretrieval.kernels.rmsnorm import rmsnorm
from deepretrieval.kernels.rope_cache import rope_cache
from deepretrieval.kernels.sampling import sample
from deepretrieval.kernels.silu_mul import silu_mul
from deepretrieval.model.kv_cache import KVCache
from deepretrieval.model.transformer import Attention, RMSNorm, Transformer

SEQ_ROUND = 128          # cache slots are rounded up to a multiple of this, so calls can share a graph
PREFILL_GRAPH_MAX_ROWS = 16     # prefills captured in a graph; larger ones keep the GPU busy anyway
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


def bucket_sizes(rows: int) -> list[int]:
    """Every `batch_bucket` value up to `rows`: the batch sizes a decoder of `rows` rows may step."""
    return sorted({batch_bucket(m) for m in range(1, rows + 1)})


class DecoderKey(NamedTuple):
    """What a cached decoder was built for; any change builds a new one."""
    rows: int
    max_len: int
    params: object
    pad_token_id: int
    cuda_graphs: bool
    pdl: bool                      # kernels launched with programmatic dependent launch
    layer_kernels: tuple           # kernels/decode_layer.layer_kernel_mode of each bucket size up to rows
    layer_config: str              # DEEPRETRIEVAL_LAYER_CONFIG, the layer kernel's tiles (graphs capture them)
    dtype: torch.dtype
    weights: tuple[int, ...]       # data pointers of the model's parameters


def decoder_for(model: Transformer, rows: int, max_len: int, params, pad_token_id: int, cuda_graphs: bool,
                new_outputs: Callable[[], object]) -> "FastDecoder":
    """The cached decoder for this call's shapes and settings, or a new one (`new_outputs()` gives
    its `deepretrieval.model.sampler.StepOutputs`, which the graph writes into)."""
    max_len = -(-max_len // SEQ_ROUND) * SEQ_ROUND
    key = DecoderKey(rows, max_len, params, pad_token_id, cuda_graphs, use_pdl(model.device),
                     tuple(layer_kernel_mode(n) for n in bucket_sizes(rows)),
                     os.environ.get("DEEPRETRIEVAL_LAYER_CONFIG", ""), model.dtype,
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


def prefill_logits(model: Transformer, ids: torch.Tensor, mask: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
    """The prompts ids [B, P] (mask [B, P] or None) through the model into `cache`: logits [B, V]
    of slot P - 1, which left padding makes every row's last prompt token."""
    return model.logits(model.forward_hidden(ids, mask, kv_cache=cache)[:, -1])


class PrefillGraph(NamedTuple):
    """A captured prefill: replay it after copying new prompts of `shape` into ids (and mask)."""
    shape: tuple
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor              # [rows, P] static input
    mask: torch.Tensor | None      # [rows, P] static input, or None
    logits: torch.Tensor           # [rows, V] static output


def _run_then_capture(device: torch.device, run: Callable, what: str):
    """(run()'s result, a CUDA graph of run(), the graph's output): run() once eagerly on a side
    stream (compiles the Triton kernels, warms cuBLAS; its result is this call's), then record it
    (capture runs nothing, so the eager run's effects stay as they are) for later calls to replay."""
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            result = run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                captured = run()
        except RuntimeError as exc:
            raise RuntimeError(f"CUDA graph capture of {what} failed: {exc}\n"
                               "generate(..., cuda_graphs=False) runs the same kernels without a graph") from exc
    return result, graph, captured


def _capture_prefill(model: Transformer, ids, mask, cache: KVCache, shape) -> tuple[torch.Tensor, PrefillGraph]:
    """The prefill run eagerly (its logits are this call's) and recorded over static copies of the
    inputs, both from an empty cache."""
    ids, mask = ids.clone(), None if mask is None else mask.clone()

    def run() -> torch.Tensor:
        cache.length = 0           # the host side of an empty cache; the forward sets it to P again
        return prefill_logits(model, ids, mask, cache)

    logits, graph, static_logits = _run_then_capture(ids.device, run, "the prefill")
    return logits, PrefillGraph(shape, graph, ids, mask, static_logits)


class MergedProjections:
    """Each layer's q/k/v weights (and biases) side by side in one tensor, and its gate/up weights
    in another, so that `_layers` runs one matmul for each group instead of three and two. They are
    copies (0.5 GB at Qwen2.5-0.5B, 3.6 GB at 3B), filled from the model by `refresh()` at the
    start of every call (none before the first): training changes the weights in place between calls."""

    def __init__(self, model: Transformer):
        self.groups = [group for layer in model.layers
                       for group in ((layer.attn.wq, layer.attn.wk, layer.attn.wv), (layer.mlp.gate, layer.mlp.up))]
        self.weights = [g[0].weight.new_empty(sum(lin.out_features for lin in g), g[0].in_features)
                        for g in self.groups]                                            # [sum(out), in]
        self.biases = [None if g[0].bias is None else g[0].bias.new_empty(sum(lin.out_features for lin in g))
                       for g in self.groups]

    def refresh(self) -> None:
        for group, weight, bias in zip(self.groups, self.weights, self.biases):
            torch.cat([lin.weight.detach() for lin in group], out=weight)
            if bias is not None:
                torch.cat([lin.bias.detach() for lin in group], out=bias)

    def qkv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.weights[2 * layer], self.biases[2 * layer]

    def gate_up(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.weights[2 * layer + 1], self.biases[2 * layer + 1]


class DecodeRows(NamedTuple):
    """The per-row tensors a decode step reads and advances (the graphs read them in place)."""
    tokens: torch.Tensor             # [B] long: the last sampled token
    positions: torch.Tensor          # [B] long: its RoPE position
    kv_start: torch.Tensor           # [B] int32: first valid slot
    kv_end: torch.Tensor             # [B] int32: one past the slot the step writes
    k: torch.Tensor                  # [L, B, H_kv, S, D]
    v: torch.Tensor                  # [L, B, H_kv, S, D]
    uniform: torch.Tensor | None     # [B, V] fp32: the step's sampling noise (None: greedy)
    out: object                      # deepretrieval.model.sampler.StepOutputs of these rows

    def head(self, rows: int) -> "DecodeRows":
        """The first `rows` rows (views: a step over them advances these tensors)."""
        return DecodeRows(self.tokens[:rows], self.positions[:rows], self.kv_start[:rows], self.kv_end[:rows],
                          self.k[:, :rows], self.v[:, :rows], None if self.uniform is None else self.uniform[:rows],
                          self.out.head(rows))


class FastDecoder:
    """Static decode state for `rows` sequences and `max_len` cache slots; see the module docstring.

    Protocol shared with the sampler's eager decoder: `out` (StepOutputs), `start(logits, cache,
    generator)` samples the first token from the prefill logits, `step()` decodes one more,
    `narrow(source)` keeps only some rows (those still decoding) for the steps after, each batch
    size with its own graph."""

    def __init__(self, model: Transformer, rows: int, max_len: int, params, out, cuda_graphs: bool, key):
        cfg, dev = model.cfg, model.device
        self.key, self.params, self.out = key, params, out
        self._model = weakref.ref(model)               # the cache entry must not keep its key alive
        static = KVCache.allocate(cfg, rows, max_len, model.dtype, dev)    # the graphs read these tensors
        self.k, self.v = static.k, static.v                                 # [L, B, H_kv, S, D]
        self.valid, self.next_pos = static.valid, static.next_pos           # [B, S], [B]: the prefill's
        cos, sin = model.rope(torch.arange(max_len, device=dev)[None], torch.float32)
        self.cos, self.sin = cos[0], sin[0]                                 # [S, D] fp32, by position
        per_row = functools.partial(torch.zeros, rows, device=dev)
        self.all_rows = DecodeRows(
            tokens=per_row(dtype=torch.long), positions=per_row(dtype=torch.long),
            kv_start=per_row(dtype=torch.int32), kv_end=per_row(dtype=torch.int32), k=self.k, v=self.v, out=out,
            uniform=None if params.temperature == 0 else per_row(cfg.vocab_size, dtype=torch.float32))
        self.rows = self.all_rows                          # the rows the steps run now (`narrow`)
        self.origin: torch.Tensor | None = None            # [R]: the batch row each row is, once narrowed
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)            # the slot the next step writes
        self.written = 0                                   # the host's count of slots written (the cache's length)
        # a few rows: kernels.decode_layer's per-op fused kernels (6-7 launches a layer); up to 64
        # rows its layer kernel; more: cuBLAS matmuls with the small kernels between them (see
        # kernels.decode_layer.layer_kernel_mode); Qwen3's q/k norms are in neither fused path
        self.layer_weights = None if cfg.qk_norm else [LayerWeights.of(layer) for layer in model.layers]
        self.sync = torch.zeros(LAYER_SYNC_WORDS, dtype=torch.int32, device=dev)   # the persistent kernel's queues
        self.merged = None if self.fused(rows) else MergedProjections(model)    # fewer rows never need more
        self.use_graph = cuda_graphs and dev.type == "cuda"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # one decode step per batch size
        self.prefill_graph: PrefillGraph | None = None
        self.prefill_shape: tuple | None = None           # the last prompt shape run eagerly
        self.generator: torch.Generator | None = None

    def fused(self, rows: int) -> bool:
        """Whether a step of `rows` rows runs kernels.decode_layer (else cuBLAS over merged weights)."""
        return self.layer_weights is not None and (rows <= FUSED_MAX_ROWS or layer_kernel_mode(rows) is not None)

    def new_cache(self) -> KVCache:
        """An empty KVCache over the static k/v, validity and positions."""
        self.valid.zero_()
        self.next_pos.zero_()
        return KVCache(self.k, self.v, valid=self.valid, next_pos=self.next_pos)

    def prefill(self, model: Transformer, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, KVCache]:
        """(last-slot logits [U, V] fp32, the cache with its first U rows filled) for the prompts
        ids [U, P] (mask [U, P] or None), U <= rows: `prefill_logits`, replayed from a CUDA graph
        where the module docstring says."""
        cache = self.new_cache()
        head = cache.head(len(ids))
        cache.length = ids.shape[1]                      # the host side of KVCache.reserve
        if not self.use_graph or len(ids) > PREFILL_GRAPH_MAX_ROWS:
            return prefill_logits(model, ids, mask, head), cache
        shape = (ids.shape, None if mask is None else mask.shape)
        g = self.prefill_graph
        if g is not None and g.shape == shape:
            g.ids.copy_(ids)
            if mask is not None:
                g.mask.copy_(mask)
            g.graph.replay()
            return g.logits, cache
        if shape != self.prefill_shape:                  # first sight: eager
            self.prefill_shape = shape
            return prefill_logits(model, ids, mask, head), cache
        self.prefill_graph = None                        # free the old graph's memory first
        logits, self.prefill_graph = _capture_prefill(model, ids, mask, head, shape)
        return logits, cache

    def start(self, logits: torch.Tensor, cache: KVCache, generator: torch.Generator | None) -> None:
        """Take the state after the prefill into `cache` and sample the first token from `logits` [B, V]."""
        self.generator, self.rows, self.origin = generator, self.all_rows, None
        if self.merged is not None:
            self.merged.refresh()
        kv_start, kv_end = kv_range_from_mask(cache.valid)     # left padding: one run of real slots per row
        rows = self.rows
        rows.kv_start.copy_(kv_start)
        rows.kv_end.copy_(kv_end + 1)                          # the first step's slot is visible to it
        rows.positions.copy_(cache.next_pos)
        self.slot.fill_(cache.length)
        self.written = cache.length
        self._refill_noise()
        p = self.params
        self._record(rows, *sample(logits, rows.uniform, p.temperature, p.top_k, p.top_p))

    def step(self) -> None:
        self._refill_noise()
        n = len(self.rows.tokens)
        if n in self.graphs:
            self.graphs[n].replay()
        elif self.use_graph:
            self._capture()
        else:
            self._body(self.rows)
        self.written += 1

    @staticmethod
    def rows_for(running: int) -> int:
        """How many rows the steps run once `running` rows are left: their batch bucket."""
        return batch_bucket(running)

    def narrow(self, source: torch.Tensor, origin: torch.Tensor) -> None:
        """Run only rows source [R] from now on (R a batch bucket), row i being the current row
        source[i] and row origin[i] of the batch: their cached keys/values and counters move to the
        front of the static tensors."""
        R, rows = len(source), self.rows
        KVCache(rows.k, rows.v, self.valid[:len(rows.tokens)], self.next_pos[:len(rows.tokens)],
                self.written).copy_rows(source)
        for t in (rows.tokens, rows.positions, rows.kv_start, rows.kv_end):
            t[:R] = t[source]
        self.rows, self.origin = self.all_rows.head(R), origin

    # ------------------------------------------------------------------ internals
    def _refill_noise(self) -> None:
        """The step's noise, drawn for the whole batch [rows, V] even once narrowed, each row then
        taking its batch row's: the same tokens as when stopped rows run on."""
        uniform = self.all_rows.uniform
        if uniform is not None:
            uniform.uniform_(generator=self.generator)
            if self.origin is not None:
                uniform[:len(self.origin)] = uniform[self.origin]

    @staticmethod
    def _record(rows: DecodeRows, ids: torch.Tensor, logprobs: torch.Tensor, bump: tuple[torch.Tensor, ...] = ()):
        """Record the samples ids [B] and logprobs [B] of `rows`, make them the next input, bump
        `bump` (one launch)."""
        rows.out.record(ids, logprobs, last_tokens=rows.tokens, bump=bump)

    def _body(self, rows: DecodeRows) -> None:
        model = self._model()
        if model is None:
            raise RuntimeError("FastDecoder: its model was garbage-collected")
        x = model.embed(rows.tokens)                                         # [B, C]
        layers = self._layers_fused if self.fused(len(rows.tokens)) else self._layers
        x = layers(model, x, rows)                                           # [B, C], before the final norm
        p = self.params
        ids, logprobs = head_sample(x, model.norm.weight, model.norm.eps, model.head_weight, rows.uniform,
                                    p.temperature, p.top_k, p.top_p)         # [B], [B]
        # the next step writes the next slot at the next position, and sees one more key
        self._record(rows, ids, logprobs, bump=(self.slot, rows.positions, rows.kv_end))

    def _layers(self, model: Transformer, x: torch.Tensor, rows: DecodeRows) -> torch.Tensor:
        residual = None
        for i, layer in enumerate(model.layers):
            h, residual = _norm(x, layer.attn_norm, residual)
            attn = layer.attn
            qkv = F.linear(h, *self.merged.qkv(i))                           # [B, (H + 2 H_kv) D]
            q, k, v = self._heads(attn, *qkv.split([attn.wq.out_features, attn.wk.out_features,
                                                    attn.wv.out_features], dim=1))   # [B, H, D], [B, H_kv, D] x2
            if attn.q_norm is not None:                                      # Qwen3
                q = rmsnorm(q, attn.q_norm.weight, attn.q_norm.eps)
                k = rmsnorm(k, attn.k_norm.weight, attn.k_norm.eps)
            q = rope_cache(q, k, v, self.cos, self.sin, rows.positions, rows.k[i], rows.v[i], self.slot)
            # attention of q [B, H, D] (this step's k/v already in the cache) over each row's range
            attended = decode_attention(q, rows.k[i], rows.v[i], rows.kv_start, rows.kv_end).flatten(1)  # [B, H * D]
            x = attn.wo(attended)                                            # [B, C]
            h, residual = _norm(x, layer.mlp_norm, residual)
            gate, up = F.linear(h, *self.merged.gate_up(i)).chunk(2, dim=1)  # [B, F] x2 (views)
            x = layer.mlp.down(silu_mul(gate, up))                           # [B, C]
        return x + residual

    def _layers_fused(self, model: Transformer, x: torch.Tensor, rows: DecodeRows) -> torch.Tensor:
        """The same layers through kernels.decode_layer: at a few rows 6 (one row) or 7 launches
        each, RMSNorm folded into the projection after it, bias, SiLU-gate and the residual add into
        the projection before them, RoPE and the cache write into the qkv projection at one row;
        more rows (up to 64 by default) its layer kernel, each layer's last stage writing the next
        layer's input norm."""
        return decode_layers(x, self.layer_weights, model.layers[0].attn_norm.eps, self.cos, self.sin, rows.positions,
                             rows.k, rows.v, self.slot, rows.kv_start, rows.kv_end, sync=self.sync)

    @staticmethod
    def _heads(attn: Attention, q, k, v):
        """[B, H * D] projections -> q [B, H, D], k and v [B, H_kv, D] (views)."""
        B = q.shape[0]
        return (q.view(B, attn.num_heads, attn.head_dim), k.view(B, attn.num_kv_heads, attn.head_dim),
                v.view(B, attn.num_kv_heads, attn.head_dim))

    def _capture(self) -> None:
        """Run this step eagerly, then record it for every later step of this batch size to replay."""
        rows = self.rows
        _, self.graphs[len(rows.tokens)], _ = _run_then_capture(self.k.device, lambda: self._body(rows),
                                                                "the decode step")

"""The fast decode path (model/fast_decode.py) against the eager one (model/sampler.py).

    python -m pytest -q tests/test_fast_decode.py              # CPU: the same step on the references
    python -m pytest -q -m gpu tests/test_fast_decode.py       # CUDA: Triton kernels + CUDA graphs

On CPU the fast path's step runs with the kernels' PyTorch references and no graph: same tokens
and log-probs as the eager path, batch padding, stop tokens, stopped rows leaving the batch (both
paths; the fast path's graph per bucket with a stand-in for capture), decoder reuse. On CUDA, at
Qwen2.5-0.5B shapes with random weights, batch 3 (padded to 4) and 64, ragged prompts, 64 steps:
fp32 greedy tokens equal the eager path's; bf16 log-probs are as close to the trainer's
recomputation as the eager path's own are; a graph replays exactly what the eager kernels do, and
each smaller bucket that stopped rows leave behind gets a graph of its own.

Greedy decoding from random weights meets near-ties (an untrained model's logits are almost flat),
which rounding may break either way: `shared_prefixes` accepts a split only where the model's own
logits put the two candidates within `tie` logit standard deviations, and every step before it
must agree.
"""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module

from deepretrieval.kernels import use_pdl
from deepretrieval.model import fast_decode
from deepretrieval.model.config import ModelConfig
from deepretrieval.model.hf_weights import DictSource, build_model
from deepretrieval.model.sampler import EagerDecoder, SamplingParams, generate, sample_next
from deepretrieval.model.transformer import Transformer
from model_helpers import QWEN25_05B, full_forward_logprobs, tiny_hf_model

PAD = 0
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]     # ragged; 3 rows -> bucket 4


def tiny(family: str) -> Transformer:
    hf = tiny_hf_model(family)
    return build_model(ModelConfig.from_hf_dict(hf.config.to_dict()), DictSource(hf.state_dict()))


def shared_prefixes(model, prompts, a, b, tie: float) -> list[int]:
    """Per row, the number of leading tokens generations a and b share; where they split, the
    model's logits (a full forward over the shared prefix) must make it a near-tie: a margin below
    `tie` logit standard deviations, two ulps of the logits' dtype, or the two paths' own errors on
    that row (how far each one's log-probs of its tokens up to the split lie from that forward's),
    whichever is largest. The last is what two correct bf16 paths with different accumulation
    orders differ by (seen on an H100: a 3-ulp margin of 0.047 at |logit| ~ 2, batch 64)."""
    shared = []
    for i, (p, ta, tb) in enumerate(zip(prompts, a.token_lists(), b.token_lists())):
        n = next((k for k, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
        if n is None:
            assert ta == tb
            shared.append(len(ta))
            continue
        with torch.no_grad():          # position len(p) - 1 + k predicts token k, k = 0..n
            logits = model(torch.tensor([p + ta[:n]], device=model.device))[0, len(p) - 1:].float()   # [n + 1, V]
        full = torch.log_softmax(logits, dim=-1)
        steps = torch.arange(n + 1, device=full.device)
        err_a = (a.logprobs[i, :n + 1].to(full.device) - full[steps, ta[:n + 1]]).abs().max().item()
        err_b = (b.logprobs[i, :n + 1].to(full.device) - full[steps, ta[:n] + [tb[n]]]).abs().max().item()
        last = logits[n]
        margin = (last[ta[n]] - last[tb[n]]).abs().item()
        # the logits come out of the LM head in the model's dtype: two bf16 ulps of their magnitude is
        # a tie at that resolution (seen on an H100: a 1-ulp margin of 0.03125 at |logit| ~ 5)
        resolution = 2 * torch.finfo(model.dtype).eps * last[[ta[n], tb[n]]].abs().max().item()
        assert margin < max(tie * last.std().item(), resolution, err_a + err_b), (
            f"step {n}: {ta[n]} vs {tb[n]}, margin {margin:.5f} is not a near-tie (logit std {last.std():.4f}, "
            f"errors of the two paths on this row {err_a:.5f} + {err_b:.5f})")
        shared.append(n)
    return shared


def prefix_logprob_diffs(a, b, shared: list[int]) -> torch.Tensor:
    return torch.cat([(a.logprobs[i, :n] - b.logprobs[i, :n]).abs() for i, n in enumerate(shared)])


def assert_as_close_to_trainer(model, prompts, fast, eager, temperature: float) -> None:
    """bf16 tolerance, calibrated in the same run: the fast path's log-probs are as close to the
    trainer's recomputation (a full forward) as the eager path's own are."""
    errs = {}
    for name, out in (("fast", fast), ("eager", eager)):
        recomputed, real = full_forward_logprobs(model, prompts, out, temperature, PAD)
        errs[name] = (recomputed - out.logprobs)[real].abs()
    assert errs["fast"].mean() <= 1.5 * errs["eager"].mean() + 1e-3, errs
    assert errs["fast"].max() <= 2.0 * errs["eager"].max() + 1e-2, errs


# ------------------------------------------------------------------ CPU: the step on the references
def test_batch_bucket():
    assert [fast_decode.batch_bucket(n) for n in (1, 2, 3, 5, 64, 65, 128, 129, 300)] == \
        [1, 2, 4, 8, 64, 128, 128, 256, 384]


@pytest.mark.parametrize("family", ["qwen2", "qwen2-tied", "qwen3", "llama3-rope"])
def test_fast_equals_eager_greedy_with_stops(family):
    model = tiny(family)
    greedy = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0), pad_token_id=PAD,
                      fast=False)
    stop = greedy.token_lists()[0][3]          # row 0 stops by its 4th token; others maybe
    params = SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(stop, 255), sync_every=2)
    eager = generate(model, PROMPTS, params, pad_token_id=PAD, fast=False)
    fast = generate(model, PROMPTS, params, pad_token_id=PAD, fast=True)
    assert fast.token_lists() == eager.token_lists() and fast.tokens.shape == eager.tokens.shape
    assert torch.equal(fast.tokens, eager.tokens) and torch.equal(fast.lengths, eager.lengths)
    assert fast.finish_reasons == eager.finish_reasons and fast.finish_reasons[0] == "stop"
    assert (fast.logprobs - eager.logprobs).abs().max().item() <= 1e-5


@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=10, temperature=1.0),
    SamplingParams(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.8),
], ids=["t1", "t0.7-topk-topp"])
def test_fast_sampling_logprobs_match_full_forward(params):
    model = tiny("qwen2")
    out = generate(model, PROMPTS, params, pad_token_id=PAD, seed=0, fast=True)
    recomputed, real = full_forward_logprobs(model, PROMPTS, out, params.temperature, PAD)
    assert real.all() and (recomputed - out.logprobs).abs().max().item() <= 1e-4
    again = generate(model, PROMPTS, params, pad_token_id=PAD, seed=0, fast=True)
    assert torch.equal(again.tokens, out.tokens)
    other = generate(model, PROMPTS, params, pad_token_id=PAD, seed=1, fast=True)
    assert not torch.equal(other.tokens, out.tokens)


def spread_stops(rows: list[list[int]], count: int) -> tuple[tuple[int, ...], list[int]]:
    """Up to `count` stop tokens taken from the rows' own tokens, one at a time, each the one that
    gives the rows' ends the most distinct lengths: (the stop tokens, each row's length with them)."""
    first = [{} for _ in rows]                              # row -> token -> its first position
    for seen, row in zip(first, rows):
        for k, t in enumerate(row):
            seen.setdefault(t, k)
    ends = [len(r) for r in rows]

    def with_token(t) -> list[int]:
        return [min(end, seen[t] + 1) if t in seen else end for end, seen in zip(ends, first)]
    stops = []
    for _ in range(count):
        best = max(sorted({t for r in rows for t in r}), key=lambda t: len(set(with_token(t))))
        if len(set(with_token(best))) <= len(set(ends)):
            break
        stops.append(best)
        ends = with_token(best)
    return tuple(sorted(stops)), ends


def end_late_rows(rows: list[list[int]], stops: tuple[int, ...], step: int,
                  at_most: int) -> tuple[tuple[int, ...], list[int]]:
    """`stops` and, while more than `at_most` rows would still run after `step` tokens, a token from
    the first `step` of one such row (a different position for each), so that a batch narrows:
    (the stop tokens, each row's length with them)."""
    stops = list(stops)
    while True:
        ends = [next((k + 1 for k, t in enumerate(r) if t in stops), len(r)) for r in rows]
        late = [i for i, e in enumerate(ends) if e > step]
        if len(late) <= at_most:
            return tuple(sorted(set(stops))), ends
        stops.append(rows[late[0]][step - 1 - len(stops) % (step // 2)])


def spy_on_narrow(monkeypatch, fast: bool) -> list[int]:
    """The row counts that the decoder's `narrow` is asked to keep, call by call."""
    decoder_type = fast_decode.FastDecoder if fast else EagerDecoder
    kept, narrow = [], decoder_type.narrow

    def spy(self, source, origin):
        kept.append(len(source))
        narrow(self, source, origin)
    monkeypatch.setattr(decoder_type, "narrow", spy)
    return kept


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "keep"])
@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
def test_stopped_rows_leave_the_batch(monkeypatch, fast, compact):
    """Rows that stop at different steps: each row's output is its greedy decoding without stop
    tokens, cut at its first stop token, in the prompts' order, whether stopped rows leave the batch
    at the checks (the eager path keeps exactly the rows still running, the fast path the bucket that
    holds them) or run to the end."""
    model = tiny("qwen2")
    prompts = [[5 + i, 6, 7 + 2 * i, 8, 30 + i][: 2 + i % 4] for i in range(7)]      # 7 rows -> bucket 8
    free = generate(model, prompts, SamplingParams(max_new_tokens=16, temperature=0.0), pad_token_id=PAD, fast=fast)
    rows = free.token_lists()
    stops, cut = spread_stops(rows, count=1)      # the model repeats a few tokens: one is enough
    assert len(set(cut)) >= 5 and min(cut) <= 2 and max(cut) > 12, cut     # the rows stop far apart
    kept = spy_on_narrow(monkeypatch, fast)
    params = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=stops, sync_every=2, compact=compact)
    out = generate(model, prompts, params, pad_token_id=PAD, fast=fast)
    assert out.token_lists() == [r[:n] for r, n in zip(rows, cut)]
    assert out.finish_reasons == ["stop" if r[n - 1] in stops else "length" for r, n in zip(rows, cut)]
    for i, n in enumerate(cut):
        assert (out.logprobs[i, :n] - free.logprobs[i, :n]).abs().max().item() <= 1e-5
        assert (out.logprobs[i, n:] == 0).all() and (out.tokens[i, n:] == PAD).all()
    if not compact:
        assert kept == []
        return
    assert kept and kept == sorted(set(kept), reverse=True), kept      # ever fewer rows
    if fast:
        assert all(n == fast_decode.batch_bucket(n) and n < 8 for n in kept), kept
        # the next call starts from the whole bucket again, and narrows the same way
        again = generate(model, prompts, params, pad_token_id=PAD, fast=fast)
        assert again.token_lists() == out.token_lists() and kept[len(kept) // 2:] == kept[:len(kept) // 2]


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
def test_sampled_rows_leave_the_batch_with_their_logprobs(monkeypatch, fast):
    """Sampling with stop tokens that end most rows early: each row keeps drawing the noise it
    draws in the whole batch, so the rollout is the one where stopped rows run on; the rows that
    move to the front keep their own cache, so every log-prob is what the trainer recomputes from a
    full forward over the row's own prompt and tokens."""
    model = tiny("qwen2")
    prompts = [p for p in PROMPTS for _ in range(4)]                   # 12 rows -> bucket 16
    params = SamplingParams(max_new_tokens=24, temperature=1.0, stop_token_ids=tuple(range(4, 256, 8)), sync_every=2)
    kept = spy_on_narrow(monkeypatch, fast)
    out = generate(model, prompts, params, pad_token_id=PAD, seed=0, fast=fast)
    assert len(kept) >= 2 and len(set(out.lengths.tolist())) >= 4, (kept, out.lengths)
    recomputed, real = full_forward_logprobs(model, prompts, out, params.temperature, PAD)
    assert (recomputed - out.logprobs)[real].abs().max().item() <= 1e-4
    run_on = generate(model, prompts, dataclasses.replace(params, compact=False), pad_token_id=PAD, seed=0, fast=fast)
    assert torch.equal(run_on.tokens, out.tokens) and torch.equal(run_on.lengths, out.lengths)
    assert (run_on.logprobs - out.logprobs).abs().max().item() <= 1e-5


class ReplayedStep:
    """A stand-in for a captured CUDA graph: replaying it runs again the step it was given, over the
    tensors that step was bound to (as a graph replays its kernels over fixed addresses)."""

    def __init__(self, run):
        self.run, self.replays = run, 0

    def replay(self):
        self.replays += 1
        self.run()


def test_each_bucket_replays_its_own_step(monkeypatch):
    """The graph bookkeeping of narrowing, on CPU: with capture replaced by `ReplayedStep`, each
    batch size the steps narrow to is captured once, over views of its own rows, and replayed for
    the steps after; a second call replays every bucket without capturing; both equal the rollout
    without graphs."""
    model = tiny("qwen2")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 256, (3 + i % 5,), generator=g).tolist() for i in range(20)]   # -> bucket 32
    params = SamplingParams(max_new_tokens=24, temperature=1.0, stop_token_ids=tuple(range(4, 256, 6)), sync_every=2)
    want = generate(model, prompts, params, pad_token_id=PAD, seed=0, fast=True)
    fast_decode.release(model)
    captured = []

    def capture(device, run, what):
        captured.append(ReplayedStep(run))
        return run(), captured[-1], None
    monkeypatch.setattr(fast_decode, "_run_then_capture", capture)
    init = fast_decode.FastDecoder.__init__

    def with_graphs(self, *args):
        init(self, *args)
        self.use_graph = True                   # as on CUDA (prefills of over 16 prompts run eagerly there)
    monkeypatch.setattr(fast_decode.FastDecoder, "__init__", with_graphs)
    kept = spy_on_narrow(monkeypatch, fast=True)
    for call in range(2):
        out = generate(model, prompts, params, pad_token_id=PAD, seed=0, fast=True)
        assert torch.equal(out.tokens, want.tokens) and torch.equal(out.logprobs, want.logprobs)
        decoder = fast_decode._DECODERS[model]
        assert sorted(decoder.graphs, reverse=True) == [32] + kept[:len(kept) // (call + 1)], (decoder.graphs, kept)
        assert len(captured) == len(decoder.graphs) >= 3          # the second call captured nothing
    assert all(graph.replays > 0 for graph in captured)


@pytest.mark.parametrize("family,rows", [("qwen2", 70), ("qwen3", 20), ("qwen2", 20)])
def test_many_rows_follow_in_place_weight_changes(family, rows):
    """Above 64 rows (and for Qwen3's q/k norms) q/k/v and gate/up run on merged copies of the
    weights (biases too for qwen2), refreshed at every call; up to 64 the layer kernel reads the
    model's own tensors. Either way an in-place update between two calls (what an optimiser step
    does) is decoded as the eager path decodes it."""
    model = tiny(family)
    prompts = (PROMPTS * 24)[:rows]                                # 70 rows -> bucket 128; 20 -> 32
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    logprobs = []
    for _ in range(2):
        fast = generate(model, prompts, params, pad_token_id=PAD, fast=True)
        assert (fast_decode._DECODERS[model].merged is not None) == (rows > 64 or family == "qwen3")
        eager = generate(model, prompts, params, pad_token_id=PAD, fast=False)
        assert torch.equal(fast.tokens, eager.tokens)
        assert (fast.logprobs - eager.logprobs).abs().max().item() <= 1e-5
        logprobs.append(fast.logprobs)
        with torch.no_grad():                                      # a different model, same tensors
            for layer in model.layers:
                layer.attn.wk.weight.mul_(-1.5)
                layer.mlp.up.weight.mul_(2.0)
                if layer.attn.wv.bias is not None:
                    layer.attn.wv.bias.add_(0.5)
    assert (logprobs[0] - logprobs[1]).abs().max().item() > 1e-2    # the change shows in the output


def test_all_rows_stopped_ends_at_the_next_check():
    model = tiny("qwen2")
    first = generate(model, PROMPTS, SamplingParams(max_new_tokens=1, temperature=0.0), pad_token_id=PAD).tokens
    params = SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=tuple(first[:, 0].tolist()),
                            sync_every=4)
    out = generate(model, PROMPTS, params, pad_token_id=PAD, fast=True)
    assert out.tokens.shape == (3, 4) and out.lengths.tolist() == [1, 1, 1]
    assert out.finish_reasons == ["stop"] * 3 and (out.tokens[:, 1:] == PAD).all()


def test_decoder_reuse_and_rebuild(monkeypatch):
    monkeypatch.delenv("DEEPRETRIEVAL_LAYER_CONFIG", raising=False)
    model = tiny("qwen2")
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    a = generate(model, PROMPTS, params, pad_token_id=PAD, fast=True)
    decoder = fast_decode._DECODERS[model]
    assert decoder.k.shape[1] == 4 and decoder.k.shape[3] == fast_decode.SEQ_ROUND   # bucket, rounded slots
    b = generate(model, PROMPTS[::-1], params, pad_token_id=PAD, fast=True)     # same shapes: reused
    assert fast_decode._DECODERS[model] is decoder
    assert b.token_lists() == a.token_lists()[::-1]
    # new weight storage must never be read through the old decoder
    with torch.no_grad():
        model.layers[0].mlp.up.weight = nn.Parameter(model.layers[0].mlp.up.weight * 3)
    c = generate(model, PROMPTS, params, pad_token_id=PAD, fast=True)
    assert fast_decode._DECODERS[model] is not decoder
    assert c.token_lists() == generate(model, PROMPTS, params, pad_token_id=PAD, fast=False).token_lists()
    # nor a graph captured with other layer-kernel tiles
    decoder = fast_decode._DECODERS[model]
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "stream_k=6")
    generate(model, PROMPTS, params, pad_token_id=PAD, fast=True)
    assert fast_decode._DECODERS[model] is not decoder
    fast_decode.release(model)
    assert model not in fast_decode._DECODERS


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the gpu tests run the compiled kernels")
@pytest.mark.parametrize("family,temperature,rows,layer_kernel,layer_config", [
    ("qwen3", 0.0, 3, "", ""), ("qwen3", 1.0, 3, "", ""), ("qwen2", 0.0, 3, "", ""), ("qwen2", 1.0, 3, "", ""),
    ("qwen2", 1.0, 1, "", ""), ("qwen2", 1.0, 20, "off", ""), ("qwen2", 0.0, 20, "", ""),
    ("qwen2", 1.0, 40, "persistent", "stream_k=2,4,6,7 stream_k_items=3")])
def test_fast_step_through_triton_interpreter(monkeypatch, family, temperature, rows, layer_kernel, layer_config):
    """The step's calls into the Triton launchers (shapes, strides, dtypes), on CPU in Triton's
    interpreter: the same tokens and log-probs as the step on the PyTorch references. qwen3 (q/k
    norm) takes the unfused layers, qwen2 (biases) kernels.decode_layer's per-op fused kernels; one
    row (head_dim 16) also the one-kernel qkv + RoPE + cache write; 20 rows the layer kernel (the
    default up to 64 rows), or with DEEPRETRIEVAL_LAYER_KERNEL=off the unfused layers over merged
    projections, and the LM head with the sampler in its epilogue; 40 rows the layer kernel asked
    for as "persistent", with stream-K projections (three work items a stage,
    DEEPRETRIEVAL_LAYER_CONFIG)."""
    pytest.importorskip("triton", reason="triton is a test dependency (Linux)")
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", layer_kernel)
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", layer_config)
    model = tiny(family)
    params = SamplingParams(max_new_tokens=5, temperature=temperature)
    prompts = (PROMPTS * 7)[:rows]
    want = generate(model, prompts, params, pad_token_id=PAD, seed=0, fast=True)
    fused = fast_decode._DECODERS[model].fused(fast_decode.batch_bucket(rows))
    assert fused == (family == "qwen2" and (rows <= 16 or layer_kernel != "off"))
    from deepretrieval.kernels import (decode_attention, decode_layer, fused_linear, head_sample, qkv_rope_cache,
                                       record_step, rmsnorm, rope_cache, sampling, silu_mul)
    for module in (decode_attention, decode_layer, fused_linear, head_sample, qkv_rope_cache, record_step, rmsnorm,
                   rope_cache, sampling, silu_mul):
        monkeypatch.setattr(module, "use_triton", lambda *tensors: True)
    got = generate(model, prompts, params, pad_token_id=PAD, seed=0, fast=True)
    assert torch.equal(got.tokens, want.tokens)
    assert (got.logprobs - want.logprobs).abs().max().item() <= 1e-4


def test_fast_path_refuses_what_it_cannot_run():
    model = tiny("qwen2")
    with pytest.raises(ValueError, match="custom sample_fn"):
        generate(model, PROMPTS, SamplingParams(max_new_tokens=2), pad_token_id=PAD, fast=True,
                 sample_fn=lambda logits, params, generator: sample_next(logits, params, generator))
    odd = Transformer(ModelConfig(model_type="llama", vocab_size=64, hidden_size=48, intermediate_size=64,
                                  num_layers=1, num_heads=2, num_kv_heads=1, head_dim=24, rms_norm_eps=1e-6,
                                  rope_theta=10000.0))
    assert "head_dim 24" in fast_decode.unsupported_reason(odd)
    with pytest.raises(ValueError, match="head_dim 24"):
        generate(odd, PROMPTS, SamplingParams(max_new_tokens=2), pad_token_id=PAD, fast=True)


# ------------------------------------------------------------------ CUDA: kernels + graphs, real shapes
def qwen25_05b(dtype: torch.dtype, seed: int = 0) -> Transformer:
    """Our model at Qwen2.5-0.5B shapes with random weights (HF's init scale, non-trivial norms/biases)."""
    cfg = ModelConfig.from_hf_dict({"model_type": "qwen2", **QWEN25_05B})
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
            else:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.1 * torch.randn_like(p))
    return model.to(dtype).eval().requires_grad_(False)


def ragged_prompts(batch: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 49, (batch,), generator=g).tolist()
    return [torch.randint(100, QWEN25_05B["vocab_size"], (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def model_fp32():
    return qwen25_05b(torch.float32)


@pytest.fixture(scope="module")
def model_bf16():
    return qwen25_05b(torch.bfloat16)


# Batch 64 runs the layer kernel (kernels/decode_layer.py) by default, and cuBLAS with "off".
ROWS_AND_LAYER_PATH = [(3, ""), (64, ""), (64, "off")]


@pytest.mark.gpu
@pytest.mark.parametrize("batch,layer_kernel", ROWS_AND_LAYER_PATH)
def test_gpu_fp32_greedy_fast_equals_eager(model_fp32, batch, layer_kernel, monkeypatch):
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", layer_kernel)
    prompts = ragged_prompts(batch)
    params = SamplingParams(max_new_tokens=64, temperature=0.0)
    eager = generate(model_fp32, prompts, params, pad_token_id=PAD, fast=False)
    fast = generate(model_fp32, prompts, params, pad_token_id=PAD)          # default on CUDA: fast + graphs
    assert fast_decode._DECODERS[model_fp32].graphs
    shared = shared_prefixes(model_fp32, prompts, fast, eager, tie=1e-3)
    assert sum(n < 64 for n in shared) <= max(1, batch // 32), shared      # splits are rare in fp32
    assert prefix_logprob_diffs(fast, eager, shared).max().item() <= 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("batch,layer_kernel", ROWS_AND_LAYER_PATH)
def test_gpu_bf16_fast_vs_eager_and_trainer(model_bf16, batch, layer_kernel, monkeypatch):
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", layer_kernel)
    prompts = ragged_prompts(batch, seed=1)
    params = SamplingParams(max_new_tokens=64, temperature=0.0)
    eager = generate(model_bf16, prompts, params, pad_token_id=PAD, fast=False)
    fast = generate(model_bf16, prompts, params, pad_token_id=PAD)
    shared = shared_prefixes(model_bf16, prompts, fast, eager, tie=0.05)
    diffs = prefix_logprob_diffs(fast, eager, shared)
    assert diffs.numel() >= batch and diffs.mean().item() < 0.03 and diffs.max().item() < 0.3
    assert_as_close_to_trainer(model_bf16, prompts, fast, eager, params.temperature)
    # a graph reused with other prompt lengths (same bucket, same cache size) decodes as a fresh one
    decoder = fast_decode._DECODERS[model_bf16]
    shorter = [p[:-3] for p in prompts]
    reused = generate(model_bf16, shorter, params, pad_token_id=PAD)
    assert fast_decode._DECODERS[model_bf16] is decoder and decoder.graphs
    fast_decode.release(model_bf16)
    fresh = generate(model_bf16, shorter, params, pad_token_id=PAD)
    shared = shared_prefixes(model_bf16, shorter, reused, fresh, tie=0.05)
    assert prefix_logprob_diffs(reused, fresh, shared).max().item() <= 0.05
    # the graph replays what the same kernels do eagerly (expected bit-identical; bf16 tolerance)
    plain = generate(model_bf16, prompts, params, pad_token_id=PAD, cuda_graphs=False)
    shared = shared_prefixes(model_bf16, prompts, fast, plain, tie=0.05)
    assert prefix_logprob_diffs(fast, plain, shared).max().item() <= 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("layer_kernel,layer_config", [("", ""), ("off", ""), ("", "stream_k=2,4,6,7")])
def test_gpu_bf16_sampling_rollout(model_bf16, layer_kernel, layer_config, monkeypatch):
    """The RL case: batch 64 (8 prompts x 8 completions, each prompt prefilled once and its cache
    copied), temperature 1, stop tokens. A reused decoder replays the same seeded rollout exactly;
    its log-probs are as close to the trainer's recomputation as the eager path's. Through the
    layer kernel (the default at 64 rows), through cuBLAS ("off"), and through the layer kernel
    with stream-K projections (whose flags, reset by each launch, must leave replays exact)."""
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", layer_kernel)
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", layer_config)
    prompts = [p for p in ragged_prompts(8, seed=2) for _ in range(8)]
    params = SamplingParams(max_new_tokens=64, temperature=1.0, stop_token_ids=(7, 11, 13))
    generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0)           # builds and captures
    decoder = fast_decode._DECODERS[model_bf16]
    out = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0)
    again = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0)
    assert fast_decode._DECODERS[model_bf16] is decoder and decoder.graphs
    assert torch.equal(again.tokens, out.tokens) and torch.equal(again.logprobs, out.logprobs)
    assert not torch.equal(generate(model_bf16, prompts, params, pad_token_id=PAD, seed=1).tokens, out.tokens)
    assert len(set(out.tokens[:, :8].flatten().tolist())) > 256     # sampled, not collapsed
    eager = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0, fast=False)
    assert_as_close_to_trainer(model_bf16, prompts, out, eager, params.temperature)


@pytest.mark.gpu
def test_gpu_stopped_rows_leave_the_batch(model_bf16, monkeypatch):
    """Batch 64, greedy, stop tokens that end the rows at spread-out steps, most of them by step
    32: the steps narrow to smaller buckets, each captured in its own graph (the layer kernel at 64
    and 32 rows, the fused GEMVs at 16 and fewer), every row decodes as it does when stopped rows
    run to the end (the paths differ by row count, so rounding may split near-ties), and a reused
    decoder replays it exactly."""
    prompts = ragged_prompts(64, seed=4)
    free = generate(model_bf16, prompts, SamplingParams(max_new_tokens=64, temperature=0.0), pad_token_id=PAD)
    rows = free.token_lists()
    stops, _ = spread_stops(rows, count=16)
    stops, ends = end_late_rows(rows, stops, step=32, at_most=12)
    assert len(set(ends)) >= 8 and min(ends) <= 16 and max(ends) > 32, sorted(ends)   # the rows end far apart
    params = SamplingParams(max_new_tokens=64, temperature=0.0, stop_token_ids=stops)
    kept = generate(model_bf16, prompts, dataclasses.replace(params, compact=False), pad_token_id=PAD)
    narrowed_to = spy_on_narrow(monkeypatch, fast=True)
    out = generate(model_bf16, prompts, params, pad_token_id=PAD)
    decoder = fast_decode._DECODERS[model_bf16]
    assert sorted(decoder.graphs, reverse=True) == [64] + narrowed_to, (sorted(decoder.graphs), narrowed_to)
    assert len(decoder.graphs) >= 3, (narrowed_to, out.lengths.tolist())
    shared = shared_prefixes(model_bf16, prompts, out, kept, tie=0.05)
    assert prefix_logprob_diffs(out, kept, shared).max().item() <= 0.05
    again = generate(model_bf16, prompts, params, pad_token_id=PAD)
    assert torch.equal(again.tokens, out.tokens) and torch.equal(again.logprobs, out.logprobs)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [3, 64])
def test_gpu_pdl_changes_no_token(model_bf16, batch, monkeypatch):
    """Programmatic dependent launch only overlaps kernels: a seeded rollout with it (graph and
    eager) is bit-identical to one without it. Batch 3 takes the fused-GEMV layers, 64 the layer kernel."""
    if not use_pdl(torch.device("cuda")):
        pytest.skip("this GPU has no programmatic dependent launch (compute capability < 9.0)")
    prompts = ragged_prompts(batch, seed=3)
    params = SamplingParams(max_new_tokens=64, temperature=1.0)
    with_pdl = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0)
    with_pdl_eager = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0, cuda_graphs=False)
    monkeypatch.setenv("DEEPRETRIEVAL_PDL", "0")
    without = generate(model_bf16, prompts, params, pad_token_id=PAD, seed=0)
    assert fast_decode._DECODERS[model_bf16].key.pdl is False        # rebuilt without PDL
    for out in (with_pdl, with_pdl_eager):
        assert torch.equal(out.tokens, without.tokens) and torch.equal(out.logprobs, without.logprobs)


@pytest.mark.gpu
@pytest.mark.parametrize("lengths", [(40, 40, 40), (40, 17, 33)])       # one prompt length; ragged
def test_gpu_prefill_graph_replays_what_runs_eagerly(model_bf16, lengths):
    """At a few rows the prefill is captured when a prompt shape comes twice in a row, and replayed:
    other prompts of that shape give the same tokens and log-probs, bit for bit, as the call
    without graphs. A shape seen once runs eagerly and leaves the graph alone."""
    def prompts(seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(100, QWEN25_05B["vocab_size"], (n,), generator=g).tolist() for n in lengths]
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    fast_decode.release(model_bf16)
    generate(model_bf16, prompts(4), params, pad_token_id=PAD, seed=0)             # eager
    decoder = fast_decode._DECODERS[model_bf16]
    assert decoder.prefill_graph is None
    generate(model_bf16, prompts(5), params, pad_token_id=PAD, seed=0)             # runs and captures
    captured = decoder.prefill_graph
    assert captured is not None and (captured.mask is None) == (len(set(lengths)) == 1)
    replayed = generate(model_bf16, prompts(6), params, pad_token_id=PAD, seed=0)
    assert fast_decode._DECODERS[model_bf16] is decoder and decoder.prefill_graph is captured
    longer = prompts(6) + [[101] * 60]
    generate(model_bf16, longer, params, pad_token_id=PAD, seed=0)                # a new shape, once
    assert fast_decode._DECODERS[model_bf16] is decoder and decoder.prefill_graph is captured
    generate(model_bf16, longer, params, pad_token_id=PAD, seed=0)                # twice: captured
    assert decoder.prefill_graph is not captured and decoder.prefill_graph.ids.shape == (4, 60)
    plain = generate(model_bf16, prompts(6), params, pad_token_id=PAD, seed=0, cuda_graphs=False)
    assert torch.equal(replayed.tokens, plain.tokens) and torch.equal(replayed.logprobs, plain.logprobs)

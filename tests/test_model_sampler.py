"""Our sampler: KV-cache decoding equals a full forward, the reported log-probs are what the
trainer recomputes from a full forward, stop tokens / lengths / seeds behave, and the sampling
distribution (temperature, top-k, top-p) is the one asked for."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from deepretrieval.model.hf_weights import load_hf
from deepretrieval.model.kv_cache import KVCache
from deepretrieval.model.sampler import SamplingParams, generate, sample_next
from model_helpers import full_forward_logprobs, tiny_hf_model

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
PAD = 0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny Qwen2 (biases, untied head); the sampler does not depend on the family."""
    path = tmp_path_factory.mktemp("qwen2")
    tiny_hf_model("qwen2").save_pretrained(path)
    return load_hf(path)


@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=10, temperature=0.0),
    SamplingParams(max_new_tokens=10, temperature=1.0),
    SamplingParams(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.8),
], ids=["greedy", "t1", "t0.7-topk-topp"])
def test_logprobs_match_full_forward(model, params):
    out = generate(model, PROMPTS, params, pad_token_id=PAD, seed=0)
    assert out.tokens.shape == (3, 10) and out.lengths.tolist() == [10, 10, 10]
    assert out.finish_reasons == ["length"] * 3
    recomputed, real = full_forward_logprobs(model, PROMPTS, out, params.temperature, PAD)
    assert (recomputed - out.logprobs)[real].abs().max().item() <= 1e-4
    assert (out.logprobs[real] < 0).all()


def test_greedy_batch_equals_single_prompts(model):
    """Left padding changes nothing: each prompt alone gives the same greedy tokens."""
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    batched = generate(model, PROMPTS, params, pad_token_id=PAD).token_lists()
    assert batched == [generate(model, [p], params, pad_token_id=PAD).token_lists()[0] for p in PROMPTS]


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
def test_repeated_prompts_are_prefilled_once(model, monkeypatch, fast):
    """A GRPO-like batch (prompts repeated, in any order): the prefill runs over the 3 distinct
    prompts only, and every row's greedy tokens and sampled log-probs are those of its prompt."""
    from deepretrieval.model import fast_decode
    batch = [PROMPTS[i] for i in (0, 1, 0, 2, 1, 0)]
    prefilled = []
    prefill = fast_decode.prefill_logits

    def counting(model, ids, mask, cache):
        prefilled.append(ids.shape[0])
        return prefill(model, ids, mask, cache)
    monkeypatch.setattr(fast_decode, "prefill_logits", counting)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    out = generate(model, batch, greedy, pad_token_id=PAD, fast=fast)
    assert prefilled == [3]
    alone = [generate(model, [p], greedy, pad_token_id=PAD, fast=fast).token_lists()[0]
             for p in PROMPTS]
    assert out.token_lists() == [alone[i] for i in (0, 1, 0, 2, 1, 0)]
    sampled = generate(model, batch, SamplingParams(max_new_tokens=8), pad_token_id=PAD, seed=1,
                       fast=fast)
    recomputed, real = full_forward_logprobs(model, batch, sampled, 1.0, PAD)
    assert (recomputed - sampled.logprobs)[real].abs().max().item() <= 1e-4


def test_kv_cache_decode_equals_full_forward(model):
    """Prefill a padded batch, then feed tokens one by one: logits equal a full forward."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 256, (3, 14), generator=g)
    mask = torch.ones(3, 14, dtype=torch.long)
    mask[0, :4] = 0           # left padding in the prompt part
    mask[2, 11:] = 0          # a row that stops early (masked decode steps)
    with torch.no_grad():
        full = model(ids, mask)
        cache = KVCache.allocate(model.cfg, 3, 14, model.dtype, "cpu")
        steps = [model(ids[:, :8], mask[:, :8], kv_cache=cache)]
        steps += [model(ids[:, t:t + 1], mask[:, t:t + 1], kv_cache=cache) for t in range(8, 14)]
    real = mask.bool()
    assert (torch.cat(steps, 1) - full)[real].abs().max().item() <= 1e-4
    assert cache.length == 14 and cache.next_pos.tolist() == [10, 14, 11]
    with pytest.raises(ValueError, match="KV cache is full"):
        model(ids[:, :1], kv_cache=cache)


def test_stop_tokens_and_lengths(model):
    greedy = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0), pad_token_id=PAD)
    row0 = greedy.token_lists()[0]
    stop = row0[3]                 # make row 0's 4th token a stop token
    first = row0.index(stop)
    out = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(stop,),
                                                  sync_every=1), pad_token_id=PAD)
    assert out.token_lists()[0] == row0[:first + 1]              # the stop token is kept
    assert out.finish_reasons[0] == "stop" and out.lengths[0] == first + 1
    assert (out.tokens[0, first + 1:] == PAD).all() and (out.logprobs[0, first + 1:] == 0).all()
    for i in (1, 2):
        expected = greedy.token_lists()[i]
        cut = expected.index(stop) + 1 if stop in expected else len(expected)
        assert out.token_lists()[i] == expected[:cut]
        assert out.finish_reasons[i] == ("stop" if stop in expected else "length")


class AlwaysThree(torch.nn.Module):
    """A stand-in model whose next token is always 3 (whatever the input)."""
    cfg = SimpleNamespace(num_layers=1, num_kv_heads=1, head_dim=2)
    dtype, device = torch.float32, torch.device("cpu")

    def forward_hidden(self, ids, attention_mask=None, kv_cache=None):
        return torch.zeros(*ids.shape, 2)                                   # [B, T, 2]

    def logits(self, hidden):
        return 20.0 * F.one_hot(torch.full(hidden.shape[:-1], 3), 16).float()   # [..., 16]

    def forward(self, ids, attention_mask=None, kv_cache=None):
        return self.logits(self.forward_hidden(ids, attention_mask, kv_cache))


def test_all_stopped_ends_early():
    """When every row has stopped, the loop ends at the next sync point (every 4 steps here)."""
    params = SamplingParams(max_new_tokens=50, temperature=0.0, stop_token_ids=(3,), sync_every=4)
    out = generate(AlwaysThree(), [[1], [1, 2]], params, pad_token_id=PAD)
    assert out.tokens.shape == (2, 4) and out.token_lists() == [[3], [3]] and out.finish_reasons == ["stop"] * 2


def test_seeded_sampling_is_reproducible(model):
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    a = generate(model, PROMPTS, params, pad_token_id=PAD, seed=7).token_lists()
    assert a == generate(model, PROMPTS, params, pad_token_id=PAD, seed=7).token_lists()
    assert a != generate(model, PROMPTS, params, pad_token_id=PAD, seed=8).token_lists()
    top1 = generate(model, PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1),
                    pad_token_id=PAD, seed=7)
    greedy = generate(model, PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0), pad_token_id=PAD)
    assert top1.token_lists() == greedy.token_lists()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7)])
def test_sampling_distribution(temperature, top_k, top_p):
    """Empirical frequencies of sample_next match the truncated, renormalised softmax."""
    base = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
    n = 40000
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    tokens, logprobs = sample_next(base.expand(n, -1).clone(), params, torch.Generator().manual_seed(0))
    p = torch.softmax(base / temperature, -1)
    keep = torch.ones(6, dtype=torch.bool)
    if top_k:
        keep[top_k:] = False
    if top_p < 1:
        keep = (p.cumsum(-1) - p) <= top_p       # base is sorted descending
    expected = torch.where(keep, p, 0) / p[keep].sum()
    freq = torch.bincount(tokens, minlength=6).float() / n
    assert (freq - expected).abs().max().item() < 0.01
    assert (freq[~keep] == 0).all()
    # reported log-probs are of the untruncated temperature-scaled distribution
    assert torch.allclose(logprobs, torch.log(p)[tokens], atol=1e-6)


def test_invalid_params():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1.0)

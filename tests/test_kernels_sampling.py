"""Sampling: frequencies match the truncated distribution of transformers' logits warpers
(chi-square), greedy is argmax, log-probs are log_softmax(logits / T) at the chosen ids, and the
Triton kernel picks the same tokens as the reference from the same noise.

On CPU the kernel runs in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5's
vocabulary (151,936), where the frequency tests also run through the Triton kernel.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.sampling import sample, sample_reference, truncate  # noqa: E402
from deepretrieval.kernels.sampling_triton import sample_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
QWEN_VOCAB = 151_936


def _hf_truncated_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """The distribution transformers samples from: its warpers in generate's order, then softmax."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)
    scores = TemperatureLogitsWarper(temperature)(None, logits[None].clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)[0]


@pytest.mark.parametrize("dtype,top_k,top_p", [(torch.bfloat16, 5, 1.0), (torch.bfloat16, 40, 1.0),
                                               (torch.float32, 0, 0.7), (torch.float32, 6, 0.9),
                                               (torch.float32, 300, 0.95)])
def test_truncation_keeps_what_transformers_keeps(dtype, top_k, top_p):
    # bf16 logits tie often: top-k keeps every token tied with the k-th, as TopKLogitsWarper does
    # (a plain topk would keep exactly k); top-p is compared on fp32 logits, where no two tokens
    # tie at its boundary
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 2000, generator=g) * 3).to(dtype).float()           # [B, V]
    kept = torch.isfinite(truncate(logits, top_k, top_p))
    expected = torch.stack([_hf_truncated_probs(row, 1.0, top_k, top_p) > 0 for row in logits])
    assert torch.equal(kept, expected)
    if dtype == torch.bfloat16:
        assert (kept.sum(-1) > top_k).any()          # ties at the k-th value did occur


def test_top_k_keeps_ties_at_the_kth_value():
    z = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    assert torch.isfinite(truncate(z, top_k=2)).tolist() == [[True, True, True, True, False]]


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.7), (6, 0.9)])
def test_frequencies_match_truncated_distribution(top_k, top_p):
    from scipy.stats import chisquare
    n, temperature = 200_000, 0.8
    logits = torch.tensor([2.0, 1.5, 1.4, 1.0, 0.9, 0.5, 0.2, 0.0, -0.5, -1.0, -2.0, -3.0])
    expected = _hf_truncated_probs(logits, temperature, top_k, top_p).double()
    expected /= expected.sum()                                # chisquare wants sums equal in float64
    g = torch.Generator(DEVICE).manual_seed(1234)
    uniform = torch.rand(n, logits.numel(), generator=g, device=DEVICE)
    ids, logprobs = sample(logits.to(DEVICE).expand(n, -1).contiguous(), uniform, temperature, top_k, top_p)
    counts = torch.bincount(ids.cpu(), minlength=logits.numel()).double()
    kept = expected > 0
    assert counts[~kept].sum() == 0, f"truncated tokens were sampled: {counts[~kept]}"
    assert kept.sum() < logits.numel() or (top_k == 0 and top_p == 1.0)
    p_value = chisquare(counts[kept].numpy(), (expected[kept] * n).numpy()).pvalue
    assert p_value > 1e-3, f"frequencies {counts / n} vs expected {expected} (p={p_value:.2e})"
    # the log-prob is under the full tempered distribution, not the truncated one
    full = torch.log_softmax(logits / temperature, dim=-1)
    torch.testing.assert_close(logprobs.cpu(), full[ids.cpu()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_logprobs_and_greedy(temperature):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(6, 500, generator=g)).to(DEVICE)
    uniform = torch.rand(6, 500, generator=g).to(DEVICE)
    for top_k, top_p in [(0, 1.0), (20, 0.9)]:
        ids, logprobs = sample(logits, uniform, temperature, top_k, top_p)
        t = temperature or 1.0                                # greedy reports temperature 1
        torch.testing.assert_close(logprobs, torch.log_softmax(logits / t, -1).gather(-1, ids[:, None])[:, 0],
                                   atol=1e-5, rtol=1e-5)
        if temperature == 0:
            assert torch.equal(ids, logits.argmax(-1))


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_triton_equals_reference_fp32_small(temperature, num_splits):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(4, 1000, generator=g)
    logits[0, 7] = logits[0, 900] = logits[0].max() + 1      # a greedy tie across lanes and splits
    logits[1, 0] = float("-inf")                              # masked tokens are allowed
    logits, uniform = logits.to(DEVICE), torch.rand(4, 1000, generator=g).to(DEVICE)
    got_ids, got_lp = sample_triton(logits, uniform, temperature, num_splits=num_splits, block_v=128)
    want_ids, want_lp = sample_reference(logits, uniform, temperature)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_lp, want_lp, atol=1e-5, rtol=1e-5)
    if temperature == 0:
        assert got_ids[0] == 7


def test_triton_refuses_truncation():
    logits = torch.zeros(1, 64, device=DEVICE)
    with pytest.raises(ValueError, match="top-k/top-p"):
        sample_triton(logits, torch.rand(1, 64, device=DEVICE), 1.0, top_k=5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("B", [1, 64, 128])
def test_triton_equals_reference_gpu(dtype, temperature, B):
    g = torch.Generator("cuda").manual_seed(B)
    logits = (4 * torch.randn(B, QWEN_VOCAB, generator=g, device="cuda")).to(dtype)
    uniform = torch.rand(B, QWEN_VOCAB, generator=g, device="cuda")
    got_ids, got_lp = sample(logits, uniform, temperature)             # dispatches to Triton
    want_ids, want_lp = sample_reference(logits, uniform, temperature)
    if temperature == 0:
        assert torch.equal(got_ids, want_ids)                          # bf16 ties: smallest id, as torch
    else:
        # race scores can differ in the last bit (fast log on the GPU), which flips a near-tie:
        # about one row in a million; allow one
        assert (got_ids != want_ids).sum().item() <= 1
    same = got_ids == want_ids
    torch.testing.assert_close(got_lp[same], want_lp[same], atol=1e-4, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_graph_replay_with_fresh_noise():
    B = 32
    g = torch.Generator("cuda").manual_seed(0)
    logits = torch.randn(B, QWEN_VOCAB, generator=g, device="cuda").to(torch.bfloat16)
    uniform = torch.empty(B, QWEN_VOCAB, device="cuda")
    uniform.uniform_(generator=g)
    sample_triton(logits, uniform, 1.0)                                # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, logprobs = sample_triton(logits, uniform, 1.0)
    for _ in range(3):
        uniform.uniform_(generator=g)                                  # new noise into the static buffer
        graph.replay()
        want_ids, want_lp = sample_reference(logits, uniform, 1.0)
        assert (ids != want_ids).sum().item() <= 1
        same = ids == want_ids
        torch.testing.assert_close(logprobs[same], want_lp[same], atol=1e-4, rtol=1e-5)

"""The LM head with the sampler in its epilogue equals its reference, the composition of
fused_linear (final norm, head, F.linear's rounding) and the sampler (tested against transformers'
warpers and by chi-square in test_kernels_sampling.py), and samples softmax(logits / T).

On CPU the kernel runs in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5 shapes.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.fused_linear import fused_linear_reference  # noqa: E402
from deepretrieval.kernels.head_sample import head_sample, head_sample_reference  # noqa: E402
from deepretrieval.kernels.head_sample_triton import HeadSampleConfig, head_sample_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = HeadSampleConfig(block_b=16, block_n=32, block_k=32, num_stages=2)


def _inputs(B: int, C: int, V: int, dtype=torch.float32, seed: int = 0, device=DEVICE):
    """x [B, C], norm weight [C], head [V, C] at HF's init scale, noise [B, V]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, generator=g)
    norm = 1.0 + 0.1 * torch.randn(C, generator=g)
    head = 0.02 * torch.randn(V, C, generator=g) * C ** 0.5     # logits of std ~1
    uniform = torch.rand(B, V, generator=g)
    return (x.to(device, dtype), norm.to(device, dtype), head.to(device, dtype), uniform.to(device))


@pytest.mark.parametrize("B", [5, 40])                 # one row block, part-filled; three, the last part-filled
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_triton_equals_reference_fp32(B, temperature):
    x, norm, head, uniform = _inputs(B, 64, 300, seed=B)      # 300: the last vocabulary tile part-filled
    x[:, 0] = 10.0                                              # a feature all rows share, the only one
    head[3] = 0.0                                               # tokens 3 and 150 read: a tie across
    head[3, 0] = 1.0                                            # tiles, exact in any order of the sums,
    head[150] = head[3]                                         # that greedy mostly picks
    got_ids, got_lp = head_sample_triton(x, norm, 1e-6, head, uniform, temperature, config=SMALL)
    want_ids, want_lp = head_sample_reference(x, norm, 1e-6, head, uniform, temperature)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_lp, want_lp, atol=1e-5, rtol=1e-5)
    if temperature == 0:
        assert (got_ids == 3).float().mean() > 0.3 and not (got_ids == 150).any()
    elif B > 20:
        assert {3, 150} < set(got_ids.tolist())                 # sampled: both tied tokens, and others


def test_dispatcher_takes_the_composition_where_the_kernel_does_not_apply():
    x, norm, head, uniform = _inputs(20, 32, 100, device="cpu")
    for top_k, top_p in [(0, 1.0), (5, 1.0), (0, 0.8)]:
        got = head_sample(x, norm, 1e-6, head, uniform, 0.8, top_k, top_p)      # CPU: the composition
        want = head_sample_reference(x, norm, 1e-6, head, uniform, 0.8, top_k, top_p)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_triton_refuses_bad_input():
    x, norm, head, uniform = _inputs(4, 32, 64)
    with pytest.raises(ValueError, match="top-k/top-p"):
        head_sample_triton(x, norm, 1e-6, head, uniform, 1.0, top_k=5)
    with pytest.raises(ValueError, match="uniform noise of shape"):
        head_sample_triton(x, norm, 1e-6, head, uniform[:, :10], 1.0)
    with pytest.raises(ValueError, match="do not fit"):
        head_sample_triton(x, norm, 1e-6, head[:, :16], uniform, 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("B,C", [(64, 896), (200, 896), (64, 2048)])     # Qwen2.5-0.5B / 3B hidden sizes
def test_gpu_equals_reference_at_qwen_shapes(dtype, temperature, B, C):
    x, norm, head, uniform = _inputs(B, C, 151_936, dtype, seed=C)
    got_ids, got_lp = head_sample(x, norm, 1e-6, head, uniform, temperature)   # dispatches to Triton
    want_ids, want_lp = head_sample_reference(x, norm, 1e-6, head, uniform, temperature)
    # the kernel's logits are cuBLAS's up to the order of the fp32 sums, which can move a bf16
    # logit by one ulp and flip a near-tie: where the ids differ, the reference must score ours
    # within two ulps of its own best
    logits = fused_linear_reference(
        x, (head,), norm_weight=norm, eps=1e-6, out_float=True)
    t = temperature or 1.0
    score = logits / t if temperature == 0 else logits / t - torch.log(-torch.log(uniform))
    rows = torch.arange(B, device=DEVICE)
    gap = score[rows, want_ids] - score[rows, got_ids]
    resolution = 2 * torch.finfo(dtype).eps * logits[rows, want_ids].abs() / t + 1e-5
    assert (gap <= resolution).all(), gap.max()
    assert (got_ids != want_ids).sum().item() <= (0 if dtype == torch.float32 else max(1, B // 32))
    same = got_ids == want_ids
    torch.testing.assert_close(got_lp[same], want_lp[same], atol=2e-2 if dtype == torch.bfloat16 else 1e-4,
                               rtol=1e-4)


@pytest.mark.gpu
def test_gpu_frequencies_follow_softmax():
    """256 identical rows, 200 draws: the tokens' frequencies are softmax(logits / T) (chi-square)."""
    from scipy.stats import chisquare
    B, C, V, temperature, draws = 256, 64, 48, 0.8, 200
    x, norm, head, _ = _inputs(1, C, V, torch.bfloat16)
    x = x.expand(B, -1).contiguous()
    g = torch.Generator(DEVICE).manual_seed(5)
    counts = torch.zeros(V, dtype=torch.float64)
    for _ in range(draws):
        uniform = torch.rand(B, V, generator=g, device=DEVICE)
        ids, _ = head_sample_triton(x, norm, 1e-6, head, uniform, temperature)
        counts += torch.bincount(ids.cpu(), minlength=V).double()
    logits = fused_linear_reference(
        x[:1], (head,), norm_weight=norm, eps=1e-6, out_float=True)[0]
    expected = torch.softmax(logits.cpu().double() / temperature, -1)
    p_value = chisquare(counts.numpy(), (expected * B * draws).numpy()).pvalue
    assert p_value > 1e-3, (counts / counts.sum(), expected, p_value)

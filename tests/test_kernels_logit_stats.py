"""Softmax statistics and gradient of LM-head logits (kernels/logit_stats.py): the reference equals
log_softmax / autograd of the log-prob and entropy, and the Triton kernels equal the reference.

On CPU the kernels run in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5's
vocabulary (151,936) in bf16.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.logit_stats import logit_grad_reference, logit_stats_reference  # noqa: E402
from deepretrieval.kernels.logit_stats_triton import logit_grad_triton, logit_stats_triton  # noqa: E402

QWEN_VOCAB = 151_936


def _case(N, V, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(N, V, generator=g)).to(dtype).to(device)
    tokens = torch.randint(0, V, (N,), generator=g).to(device)
    dlogp, dent = torch.randn(2, N, generator=g).to(device)
    return logits, tokens, dlogp, dent


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_is_log_softmax_and_its_autograd(temperature):
    logits, tokens, dlogp, dent = _case(4, 50)
    z = (logits.double() / temperature).requires_grad_(True)
    logp_all = torch.log_softmax(z, dim=-1)
    logp = logp_all.gather(-1, tokens[:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    before = logits.clone()
    lse, z_token, pz = logit_stats_reference(logits, tokens, temperature, entropy=True)
    torch.testing.assert_close((z_token - lse).double(), logp.detach(), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close((lse - pz).double(), entropy.detach(), atol=1e-5, rtol=1e-6)
    (dz,) = torch.autograd.grad((dlogp.double() * logp + dent.double() * entropy).sum(), z)
    want = dz / temperature                                             # d/dlogits = d/dz / T
    for v0, v1 in ((0, 50), (10, 33)):                                  # whole row and a column chunk
        got = logit_grad_reference(logits[:, v0:v1].contiguous(), v0, tokens, lse, pz, dlogp, dent, temperature)
        torch.testing.assert_close(got.double(), want[:, v0:v1], atol=1e-5, rtol=1e-5)
    assert torch.equal(logits, before)                                  # the inputs are not overwritten


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("entropy", [False, True])
def test_triton_stats_equal_reference(temperature, entropy):
    logits, tokens, _, _ = _case(5, 300, seed=1)                         # 300: a partial last block
    got = logit_stats_triton(logits, tokens, temperature, entropy, block_v=64)
    want = logit_stats_reference(logits, tokens, temperature, entropy)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("which", ["logp", "entropy", "both"])
@pytest.mark.parametrize("v0,v1", [(0, 300), (64, 200)])
def test_triton_grad_equals_reference(which, v0, v1):
    logits, tokens, dlogp, dent = _case(6, 300, seed=2)
    tokens[0], tokens[1] = v0, v1 - 1                                   # chunk edges inside the chunk
    lse, _, pz = logit_stats_reference(logits, tokens, 0.8, entropy=True)
    dlogp = dlogp if which in ("logp", "both") else None
    dent = dent if which in ("entropy", "both") else None
    chunk = logits[:, v0:v1].contiguous()
    got = logit_grad_triton(chunk, v0, tokens, lse, pz, dlogp, dent, 0.8, block_v=64)
    want = logit_grad_reference(chunk, v0, tokens, lse, pz, dlogp, dent, 0.8)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_triton_takes_strided_per_row_inputs():
    """`logp.sum().backward()` hands the head an expanded upstream gradient (stride 0, one stored
    element); per-row vectors with any strides must give the reference's result (a kernel that
    assumed contiguity read past a one-element buffer: garbage in the interpreter, an illegal
    address on a GPU)."""
    logits, tokens, dlogp, dent = _case(6, 300, seed=4)
    lse, _, pz = logit_stats_reference(logits, tokens, 0.8, entropy=True)
    ones = torch.full((1,), 0.5).expand(6)                              # stride 0
    every_other = torch.stack([tokens, tokens], 1).reshape(-1)[::2]   # tokens, stride 2
    assert ones.stride() == (0,) and every_other.stride() == (2,)
    got = logit_grad_triton(logits, 0, every_other, lse, pz, ones, ones, 0.8, block_v=64)
    want = logit_grad_reference(logits, 0, tokens, lse, pz, ones.contiguous(), ones.contiguous(), 0.8)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    got = logit_stats_triton(logits, every_other, 0.8, True, block_v=64)
    for g, w in zip(got, logit_stats_reference(logits, tokens, 0.8, True)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)


def test_grad_needs_an_upstream_gradient():
    logits, tokens, _, dent = _case(2, 10)
    lse, _, _ = logit_stats_reference(logits, tokens, 1.0, entropy=False)
    with pytest.raises(ValueError, match="dlogp, dent or both"):
        logit_grad_reference(logits, 0, tokens, lse, None, None, None, 1.0)
    with pytest.raises(ValueError, match="needs pz"):
        logit_grad_reference(logits, 0, tokens, lse, None, None, dent, 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gpu_bf16_at_qwen_vocabulary(temperature):
    logits, tokens, dlogp, dent = _case(64, QWEN_VOCAB, torch.bfloat16, "cuda", seed=3)
    got = logit_stats_triton(logits, tokens, temperature, entropy=True)
    want = logit_stats_reference(logits, tokens, temperature, entropy=True)   # fp32 math on the same bf16
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-6)
    lse, _, pz = want
    v0, v1 = 4096, 4096 + 8192
    tokens[:8] = torch.arange(v0, v0 + 8, device="cuda")                # some targets inside the chunk
    chunk = logits[:, v0:v1].contiguous()
    g = logit_grad_triton(chunk, v0, tokens, lse, pz, dlogp, dent, temperature)
    w = logit_grad_reference(chunk, v0, tokens, lse, pz, dlogp, dent, temperature)
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(g.float(), w.float(), atol=1e-6, rtol=1.6e-2)   # bf16: one rounding apart

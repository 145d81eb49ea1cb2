"""rl.response_head (the chunked, fused LM head + log-prob + entropy) against the unfused path
(F.linear -> .float() -> / T -> model.sampler.token_logprobs, and the entropy of the softmax) and
against hand-computed values: forward values, gradients w.r.t. h and the head weight (masked
positions included), bf16 autocast with fp32 master weights, what autograd keeps, the no-grad
path, and ResponseModel with tied and untied heads."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from deepretrieval.model.sampler import token_logprobs
from deepretrieval.model.transformer import Transformer
from deepretrieval.rl.models import ResponseModel
from deepretrieval.rl.response_head import response_logprobs
from deepretrieval.rl.toy_task import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, T_SEQ, P, C, V = 3, 10, 3, 16, 1000      # response length T_SEQ - P = 7, N = 21 tokens
SMALL_CHUNKS = 4 * V * 4                     # forward: 4 rows per chunk; backward: 190 columns


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """The unfused entropy: [..., V] -> [...] (fp32)."""
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1, keepdim=True)
    probs = torch.exp(logits - logz)
    return logz.squeeze(-1) - (probs * logits).sum(dim=-1)


def unfused(h, weight, tokens, temperature, entropy):
    logits = F.linear(h, weight).float()                  # as Transformer.logits
    if temperature != 1.0:
        logits = logits / temperature
    return (token_logprobs(logits, tokens, 1.0),
            entropy_from_logits(logits) if entropy else None)


def _inputs(device="cpu"):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T_SEQ, C, generator=g)                                     # [B, T, C]
    weight = torch.randn(V, C, generator=g) * 0.5                                      # [V, C] fp32
    tokens = torch.randint(0, V, (B, T_SEQ - P), generator=g)                          # [B, R]
    mask = torch.ones(B, T_SEQ - P)
    mask[0, 4:] = 0                                                                    # padding
    mask[2, 1:] = 0
    tokens[mask == 0] = 0                                                              # pad id
    dlogp = torch.randn(B, T_SEQ - P, generator=g) * mask                              # upstream
    dent = torch.randn(B, T_SEQ - P, generator=g) * mask
    return (hidden.to(device).requires_grad_(True), weight.to(device).requires_grad_(True),
            tokens.to(device), dlogp.to(device), dent.to(device))


def _run(fn, hidden, weight, tokens, dlogp, dent, temperature, entropy):
    """Forward through `fn` on the response slice, backward with the upstream grads; the outputs
    and the gradients w.r.t. hidden and weight."""
    hidden.grad = weight.grad = None
    h = hidden[:, P - 1:-1]                                                            # [B, R, C]
    logp, ent = fn(h, weight, tokens, temperature, entropy)
    loss = (logp * dlogp).sum() + ((ent * dent).sum() if entropy else 0.0)
    loss.backward()
    return logp.detach(), (ent.detach() if entropy else None), hidden.grad, weight.grad


def _fused(chunk_bytes, keep_logits=False):
    return lambda h, w, t, temp, ent: response_logprobs(h, w, t, temp, ent, chunk_bytes, keep_logits)


def test_by_hand():
    h = torch.ones(1, 1)
    weight = torch.tensor([[0.0], [0.0], [math.log(2.0)]])          # probs 0.25, 0.25, 0.5
    out = response_logprobs(h, weight, torch.tensor([2]), entropy=True)
    ent = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    torch.testing.assert_close(out.logprobs, torch.tensor([math.log(0.5)]))
    torch.testing.assert_close(out.entropy, torch.tensor([ent]))
    # the references themselves
    logits = weight.t()                                              # [1, 3]
    torch.testing.assert_close(token_logprobs(logits, torch.tensor([2]), 1.0),
                               torch.tensor([math.log(0.5)]))
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([ent]))


@pytest.mark.parametrize("chunk_bytes", [SMALL_CHUNKS, 256 * 2**20])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("entropy", [False, True])
@pytest.mark.parametrize("keep_logits", [False, True])
def test_matches_unfused_fp32(chunk_bytes, temperature, entropy, keep_logits):
    args = _inputs()
    ref = _run(unfused, *args, temperature, entropy)
    got = _run(_fused(chunk_bytes, keep_logits), *args, temperature, entropy)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-6)
    if entropy:
        torch.testing.assert_close(got[1], ref[1], rtol=1e-6, atol=1e-6)
    for g, r in zip(got[2:], ref[2:]):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=0, atol=1e-5)
    assert (got[2][:, :P - 1] == 0).all() and (got[2][:, -1] == 0).all()   # only response rows
    assert got[3].abs().max() > 1e-2                                       # a real gradient
    print(f"T={temperature} entropy={entropy} chunk={chunk_bytes}: max |logp| err "
          f"{(got[0] - ref[0]).abs().max():.1e}, ent "
          f"{(got[1] - ref[1]).abs().max() if entropy else 0:.1e}, grad_h "
          f"{(got[2] - ref[2]).abs().max():.1e}, grad_W {(got[3] - ref[3]).abs().max():.1e}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("keep_logits", [False, True])
def test_matches_unfused_bf16_autocast(device, temperature, keep_logits):
    """fp32 master weight and hidden states, the head in bf16 (as F.linear under autocast);
    gradients come back in fp32. bf16 rounding of the logits and of the GEMMs: loose tolerance."""
    args = _inputs(device)

    def autocast(fn):
        def run(*a):
            with torch.autocast(device, dtype=torch.bfloat16):
                return fn(*a)
        return run
    ref = _run(autocast(unfused), *args, temperature, True)
    got = _run(autocast(_fused(SMALL_CHUNKS, keep_logits)), *args, temperature, True)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype == torch.float32
    # same bf16 logits; fp32 reductions over chunks vs whole rows may differ in the last bits
    # (an H100 gave 1.2e-5 on a log-prob of about -2, relative 5.8e-6)
    torch.testing.assert_close(got[0], ref[0], rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=2e-5, atol=1e-5)
    for g, r in zip(got[2:], ref[2:]):                                     # bf16 GEMM rounding
        torch.testing.assert_close(g, r, rtol=0, atol=2e-2 * r.abs().max().item())
    print(f"bf16 {device} T={temperature}: max |logp| err {(got[0] - ref[0]).abs().max():.1e}, "
          f"grad_h "
          f"{(got[2] - ref[2]).abs().max() / ref[2].abs().max():.1e} rel, grad_W "
          f"{(got[3] - ref[3]).abs().max() / ref[3].abs().max():.1e} rel")


def test_autograd_keeps_no_logits_and_no_grad_keeps_nothing():
    hidden, weight, tokens, _, _ = _inputs()
    h = hidden[:, P - 1:-1]
    N = tokens.numel()

    def saved_numels(fn):
        numels = []

        def pack(t):
            numels.append(t.numel())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(h, weight, tokens, 0.7, True)
        return numels, out
    ref_saved, _ = saved_numels(unfused)
    saved, out = saved_numels(_fused(SMALL_CHUNKS))
    assert max(ref_saved) >= N * V                                 # the unfused path keeps logits
    assert sorted(saved) == sorted([N * C, V * C, N, N, N])   # h, weight, tokens, lse, sum(p * z)
    kept, _ = saved_numels(_fused(SMALL_CHUNKS, keep_logits=True))
    assert sorted(kept) == sorted(saved + [N * V])                  # + the forward's logits
    with torch.no_grad():
        logp, ent = response_logprobs(h, weight, tokens, 0.7, True, SMALL_CHUNKS)
    assert logp.grad_fn is None and ent.grad_fn is None
    torch.testing.assert_close(logp, out.logprobs.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ent, out.entropy.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_response_model_matches_unfused(tied):
    torch.manual_seed(0)
    lm = Transformer(dataclasses.replace(tiny_config(), tie_word_embeddings=tied))
    model = ResponseModel(lm)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 32, (2, 9), generator=g)                  # rl.rollout.collate's layout:
    start = torch.tensor([4, 3])                                      # row 1 has a shorter prompt
    dlogp, dent = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)

    def grads(forward):
        model.zero_grad(set_to_none=True)
        logp, ent = forward()
        ((logp * dlogp).sum() + (ent * dent).sum()).backward()
        return [logp.detach(), ent.detach()], {k: p.grad for k, p in model.named_parameters()}
    got, got_g = grads(lambda: model(ids, start, 5, 0.7, entropy=True)[:2])

    def reference():
        hidden = lm.forward_hidden(ids)
        rows = [lm.logits(hidden[i, s - 1:s + 4]) / 0.7 for i, s in enumerate(start.tolist())]   # [R, V]
        logp = [token_logprobs(z, ids[i, s:s + 5], 1.0) for i, (z, s) in enumerate(zip(rows, start.tolist()))]
        return torch.stack(logp), torch.stack([entropy_from_logits(z) for z in rows])
    ref, ref_g = grads(reference)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert set(got_g) == set(ref_g) and ("lm.lm_head.weight" in got_g) != tied
    for k in ref_g:
        torch.testing.assert_close(got_g[k], ref_g[k], rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_peak_memory_at_qwen_shapes_cuda():
    """One bench micro-batch (8 x 512 response tokens, V = 151936, C = 896, bf16 autocast, fp32
    master weight), forward + backward: the fused head stays near its chunk budget, the unfused
    one holds several [N, V] fp32 tensors (2.3 GiB each)."""
    N, V_Q, C_Q = 8 * 512, 151936, 896
    g = torch.Generator(device="cuda").manual_seed(0)
    weight = (torch.randn(V_Q, C_Q, device="cuda", generator=g) * 0.02).requires_grad_(True)
    h = torch.randn(N, C_Q, device="cuda", generator=g).requires_grad_(True)
    tokens = torch.randint(0, V_Q, (N,), device="cuda", generator=g)
    peaks, grads = {}, {}
    for name, fn in (("unfused", unfused), ("fused", _fused(256 * 2**20)),
                     ("fused, logits kept", _fused(256 * 2**20, keep_logits=True))):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logp, _ = fn(h, weight, tokens, 1.0, False)
        logp.sum().backward()          # an expanded (stride-0) upstream gradient
        grads[name] = (h.grad, weight.grad)
        h.grad = weight.grad = None
        peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**30
    print(f"head peak GiB: {peaks}")
    kept = N * V_Q * 2 / 2**30                                      # bf16 logits, 1.16 GiB
    assert peaks["fused"] < 2.0 and peaks["unfused"] > 6.0, peaks
    assert kept < peaks["fused, logits kept"] < kept + 2.0, peaks
    for name in ("fused", "fused, logits kept"):                    # bf16 GEMM rounding apart
        for g, r in zip(grads[name], grads["unfused"]):
            torch.testing.assert_close(g, r, rtol=0, atol=2e-2 * r.abs().max().item())

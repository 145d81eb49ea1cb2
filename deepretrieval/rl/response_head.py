"""The LM head fused with the log-prob and entropy of the response tokens, in chunks: never the
whole [N, V] logits at once, in forward or backward (as Liger-Kernel's fused linear
cross-entropy, in plain PyTorch).

    from deepretrieval.rl.response_head import response_logprobs
    out = response_logprobs(h, weight, tokens, temperature=0.7, entropy=True)
    out.logprobs, out.entropy                     # [B, R] fp32 each (entropy None unless asked)

h [B, R, C] are the hidden states that predict `tokens` [B, R] (any leading dims, N tokens in all);
`weight` [V, C] is the LM head (the tied embedding, or lm_head). The outputs are fresh tensors,
not views (FSDP2 warns on views returned from the root's forward).

Numerics are the unfused path's: logits = F.linear(h, weight) in the compute dtype (autocast's
when autocast is on, as F.linear would do; an fp32 master weight is cast per use), then .float(),
/ temperature, log-prob = gather - logsumexp (model.sampler's token_logprobs), entropy =
logsumexp - sum(p * z). Gradients come back in h's and weight's dtypes. What happens to a chunk of
logits is kernels/logit_stats.py: on CPU its torch reference (the ops above), on CUDA Triton
kernels that read the compute-dtype logits once instead of making an fp32 copy and ~8 passes.

Why: at Qwen2.5 shapes (V = 151936) one micro-batch of 8 x 512 response tokens has 2.5 GB of fp32
logits, and the unfused path keeps several tensors that size alive for backward. Here autograd
keeps h, weight, tokens and two floats per token (logsumexp, and sum(p * z) for the entropy).

Forward runs over token chunks (the exact op sequence of the unfused path, per row). Backward runs
over vocabulary chunks, recomputing each chunk's logits for all N tokens from the saved
logsumexp, so every row of grad_weight is written once (one GEMM over all tokens, as the unfused
backward) and only grad_h [N, C] accumulates:
    dz = dlogp * (onehot - p) - dent * p * (z - sum(p * z)),   dlogits = dz / temperature
(kernels.logit_stats.logit_grad).
`chunk_bytes` bounds one chunk's fp32 logits (forward: rows x V, backward: N x columns); the
working memory is a small multiple of it. Without grad (the trainer's no-grad log-prob passes)
the forward runs alone and nothing is saved.

`keep_logits=True` trades memory for time: the forward computes all [N, V] logits (compute
dtype) at once and keeps them for backward instead of recomputing them, which saves a quarter of
the head's matmuls for N * V * 2 bytes in bf16 (5 GB for 16,384 tokens at V = 151,936). Backward
then uses exactly the forward's logits.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from deepretrieval.kernels.logit_stats import logit_grad, logit_stats

DEFAULT_CHUNK_BYTES = 256 * 2**20


class HeadOutputs(NamedTuple):
    logprobs: torch.Tensor              # [...] fp32: log softmax(logits / T)[token]
    entropy: torch.Tensor | None        # [...] fp32, or None when not asked for


def response_logprobs(h: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor,
                      temperature: float = 1.0, entropy: bool = False,
                      chunk_bytes: int = DEFAULT_CHUNK_BYTES, keep_logits: bool = False
                      ) -> HeadOutputs:
    """h [..., C], weight [V, C], tokens [...] long -> HeadOutputs ([...] fp32 each), in chunks."""
    dtype = _compute_dtype(h, weight)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        logp, ent = _FusedResponseHead.apply(h, weight, tokens, temperature, entropy,
                                             chunk_bytes, dtype, keep_logits)
    else:
        logp, ent, _, _, _ = _forward(h, weight, tokens, temperature, entropy, chunk_bytes, dtype,
                                      keep_logits=False)
    return HeadOutputs(logp, ent)


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype F.linear(h, weight) computes in: autocast's when on, else the tensors' own."""
    device = h.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    if h.dtype != weight.dtype:
        raise TypeError(f"hidden states are {h.dtype} but the head weight is {weight.dtype}; "
                        "cast one of them or run under autocast")
    return h.dtype


def _forward(h, weight, tokens, temperature, entropy, chunk_bytes, dtype, keep_logits):
    """-> logp, entropy or None (fp32, tokens' shape); logsumexp [N] and sum(p * z) [N] or None
    (fp32, flat), which backward needs; all logits [N, V] (compute dtype) when `keep_logits`."""
    V = weight.shape[0]
    logp = torch.empty(tokens.shape, dtype=torch.float32, device=h.device)     # [...]
    ent = torch.empty_like(logp) if entropy else None
    logp_flat, ent_flat = logp.view(-1), (ent.view(-1) if entropy else None)   # [N] views to write
    tokens = tokens.reshape(-1)                                          # [N]
    N = tokens.shape[0]
    # Kept logits exist whole anyway, so the forward makes them in one GEMM and one statistics
    # pass (on CUDA the kernel reads them in place; its few hundred rows per chunk left the GPU
    # half idle). The CPU reference's fp32 temporaries then span all rows too.
    rows = max(1, N if keep_logits else chunk_bytes // (4 * V))
    lse = torch.empty(N, dtype=torch.float32, device=h.device)
    pz = torch.empty_like(lse) if entropy else None
    kept = torch.empty(N, V, dtype=dtype, device=h.device) if keep_logits else None
    with torch.autocast(h.device.type, enabled=False):
        hc, wc = h.reshape(N, -1).to(dtype), weight.to(dtype)           # [N, C], [V, C]
        for r0 in range(0, N, rows):
            r = slice(r0, r0 + rows)
            if keep_logits:
                logits = torch.mm(hc[r], wc.t(), out=kept[r])            # [N, V] compute dtype
            else:
                logits = F.linear(hc[r], wc)                             # [n, V] compute dtype
            lse[r], z_token, pz_r = logit_stats(logits, tokens[r], temperature, entropy)   # [n] each
            logp_flat[r] = z_token - lse[r]
            if entropy:
                pz[r] = pz_r
                ent_flat[r] = lse[r] - pz[r]
    return logp, ent, lse, pz, kept


class _FusedResponseHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, tokens, temperature, entropy, chunk_bytes, dtype, keep_logits):
        logp, ent, lse, pz, kept = _forward(h, weight, tokens, temperature, entropy, chunk_bytes,
                                            dtype, keep_logits)
        ctx.save_for_backward(h, weight, tokens, lse, pz, kept)
        ctx.temperature, ctx.chunk_bytes, ctx.dtype = temperature, chunk_bytes, dtype
        ctx.set_materialize_grads(False)          # an unused output's gradient stays None
        return logp, ent

    @staticmethod
    def backward(ctx, dlogp, dent):
        h, weight, tokens, lse, pz, kept = ctx.saved_tensors
        T, dtype = ctx.temperature, ctx.dtype
        tokens = tokens.reshape(-1)                                      # [N]
        N, V, C = tokens.shape[0], weight.shape[0], weight.shape[1]
        dlogp = dlogp.reshape(N) if dlogp is not None else None
        dent = dent.reshape(N) if dent is not None else None
        cols = max(1, ctx.chunk_bytes // (4 * N))
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.zeros(N, C, dtype=torch.float32, device=h.device) if need_h else None
        grad_w = torch.empty_like(weight) if need_w else None
        with torch.autocast(h.device.type, enabled=False):
            hc, w_all = h.reshape(N, C).to(dtype), weight.to(dtype)      # [N, C], [V, C]
            for v0 in range(0, V, cols):
                v1 = min(v0 + cols, V)
                wc = w_all[v0:v1]                                        # [v, C]
                logits = kept[:, v0:v1] if kept is not None else F.linear(hc, wc)   # [N, v] dtype
                dl = logit_grad(logits, v0, tokens, lse, pz, dlogp, dent, T)         # [N, v] dtype
                if need_h:
                    _matmul_into(grad_h, dl, wc, accumulate=True)        # [N, C]
                if need_w:
                    _matmul_into(grad_w[v0:v1], dl.t(), hc, accumulate=False)   # [v, C]
        if need_h:
            grad_h = grad_h.to(h.dtype).view(h.shape)                    # [..., C]
        return grad_h, grad_w, None, None, None, None, None, None


def _matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """out (+)= a @ b, written in place. A bf16 product into an fp32 `out` on CUDA goes straight
    there (cuBLAS with an fp32 C and beta = 1) instead of through a rounded bf16 temporary and an
    add kernel; torch has no CPU kernel for that mixed case, so there the product is cast."""
    if a.dtype == out.dtype:
        if accumulate:
            out.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
    elif out.is_cuda:
        if accumulate:
            torch.addmm(out, a, b, out_dtype=out.dtype, out=out)
        else:
            torch.mm(a, b, out_dtype=out.dtype, out=out)
    elif accumulate:
        out += a @ b
    else:
        out.copy_(a @ b)

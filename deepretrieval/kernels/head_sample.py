"""The decode step's end: final RMSNorm, LM head and sampler, without the logits in memory.

    ids, logprobs = head_sample(x, norm_weight, eps, head_weight, uniform, temperature, top_k=0, top_p=1.0)

    x            [B, C]  the residual stream after the last layer (model dtype)
    norm_weight  [C]     the final RMSNorm's weight;  head_weight [V, C]: the LM head
    uniform, temperature, top_k, top_p -> ids [B] int64, logprobs [B] fp32: as kernels.sampling.sample

It is the composition `sample(fused_linear(x, (head_weight,), norm_weight=..., out_float=True),
...)`: logits rounded to the model dtype (F.linear's output), then fp32 (`head_sample_reference`).
At a few rows (<= fused_linear's MAX_ROWS) that composition is what runs, through those two
dispatchers. For more rows on CUDA, greedy or plain temperature (the RL rollout), the Triton kernel
(kernels/head_sample_triton.py) folds each [rows, columns] tile of logits into the sampler's
partial states as it computes it, so the [B, V] fp32 logits are never written nor read back
(39 MB a step at 64 rows and a 152k vocabulary, about a third of the LM head's own traffic at
Qwen2.5-0.5B), and the norm, head, cast and sampler are 3 launches instead of about 10.
"""
from __future__ import annotations

import torch

from deepretrieval.kernels import use_triton
from deepretrieval.kernels.fused_linear import MAX_ROWS, fused_linear, fused_linear_reference
from deepretrieval.kernels.sampling import sample, sample_reference


def head_sample_reference(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, head_weight: torch.Tensor,
                          uniform: torch.Tensor | None, temperature: float, top_k: int = 0,
                          top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    logits = fused_linear_reference(x, (head_weight,), norm_weight=norm_weight, eps=eps, out_float=True)
    return sample_reference(logits, uniform, temperature, top_k, top_p)


def head_sample(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, head_weight: torch.Tensor,
                uniform: torch.Tensor | None, temperature: float, top_k: int = 0,
                top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel for more than MAX_ROWS rows on CUDA without top-k/top-p; else the
    composition of the fused_linear and sample dispatchers."""
    tensors = [t for t in (x, norm_weight, head_weight, uniform) if t is not None]
    if x.shape[0] > MAX_ROWS and top_k == 0 and top_p >= 1.0 and use_triton(*tensors):
        from deepretrieval.kernels.head_sample_triton import head_sample_triton
        return head_sample_triton(x, norm_weight, eps, head_weight, uniform, temperature)
    logits = fused_linear(x, (head_weight,), norm_weight=norm_weight, eps=eps, out_float=True)
    return sample(logits, uniform, temperature, top_k, top_p)

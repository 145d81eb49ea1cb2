"""The modules the trainers optimise: a causal LM seen through its response tokens, with an
optional value head; and what RL and SFT do alike to them (precision, export).

    actor = ResponseModel(lm)                                     # log-probs (+ entropy)
    actor = ResponseModel(lm, value_head=True)                     # PPO, critic on the shared trunk
    critic = ResponseModel(critic_copy(lm), policy=False, value_head=True)   # PPO, separate critic
    out = actor(input_ids, response_start, response_len, temperature=1.0, entropy=True)
    out.logprobs, out.entropy, out.values                         # each [B, R] (R = response_len)
    bf16 = use_bf16(cfg.precision, device)                        # "auto": bf16 autocast on CUDA
    export_policy(actor, dist_info, "runs/x/export", torch.bfloat16)   # HF folder, LoRA merged

`lm` is model.transformer.Transformer (anything with `forward_hidden`, `head_weight` and `layers`).
Sequences are rl.rollout.collate's rows: [prompt | response | padding], each starting at column 0,
the response at column `response_start[i]`. Padding only at the end means causal attention
alone keeps every real token away from padding: the trunk runs without an attention mask
(SDPA's flash kernel, positions 0, 1, 2, ...). The hidden state at position t predicts token
t + 1, so response token j of row i comes from the state at response_start[i] - 1 + j: the LM
head runs on response positions only (a 256-token prompt costs no vocabulary projection), fused
with the log-prob and entropy in chunks (rl/response_head.py: the [B, R, V] logits never exist at
once), and the value at a token is the value of the state it is generated from (as verl's critic).

The wrapper is the FSDP root: its `forward` is the one entry point, so FSDP2's hooks see every
use of the embeddings, final norm and heads.
"""
from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepretrieval.rl.distributed import DistInfo, full_model_state
from deepretrieval.rl.lora import merge_lora_state
from deepretrieval.rl.response_head import response_logprobs


class ResponseOutputs(NamedTuple):
    logprobs: torch.Tensor | None   # [B, R] log p(response token) under softmax(logits / T)
    entropy: torch.Tensor | None    # [B, R]
    values: torch.Tensor | None     # [B, R]


class ResponseModel(nn.Module):
    def __init__(self, lm: nn.Module, policy: bool = True, value_head: bool = False,
                 keep_logits: bool = False):
        super().__init__()
        self.lm = lm
        self.policy = policy
        self.keep_logits = keep_logits      # rl/response_head.py: memory for one matmul fewer
        hidden = lm.cfg.hidden_size
        # Zero init: the critic starts by predicting 0 everywhere instead of noise.
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(dtype=lm.dtype, device=lm.device)

    def forward(self, input_ids: torch.Tensor, response_start: torch.Tensor, response_len: int,
                temperature: float = 1.0, entropy: bool = False) -> ResponseOutputs:
        hidden = self.lm.forward_hidden(input_ids)                        # [B, T, C], causal only
        B, T, C = hidden.shape
        # state index of each response token's prediction; past a row's end it points at padding
        # (clamped into the row), whose outputs the response mask drops
        state = (response_start[:, None] - 1 + torch.arange(response_len, device=input_ids.device)
                 ).clamp(max=T - 2)                                       # [B, R]
        h = hidden.gather(1, state[..., None].expand(B, response_len, C))    # [B, R, C]
        tokens = input_ids.gather(1, state + 1)                           # [B, R]
        logprobs = ent = values = None
        if self.policy:
            logprobs, ent = response_logprobs(h, self.lm.head_weight, tokens, temperature, entropy,
                                              keep_logits=self.keep_logits)      # [B, R] each
        if self.value_head is not None:
            # sum over the size-1 dim rather than squeeze: FSDP2 warns on returned views
            values = self.value_head(h).float().sum(-1)                   # [B, R]
        return ResponseOutputs(logprobs, ent, values)


def critic_copy(lm: nn.Module) -> nn.Module:
    """A separate critic trunk: a deep copy of the policy LM without its (unused) LM head."""
    critic = copy.deepcopy(lm)
    if getattr(critic, "lm_head", None) is not None:
        critic.lm_head = None
    return critic


def frozen_copy(module: nn.Module) -> nn.Module:
    """The reference policy: a copy that never trains (no grads, eval mode)."""
    ref = copy.deepcopy(module)
    ref.requires_grad_(False)
    return ref.eval()


def enable_gradient_checkpointing(lm: nn.Module) -> None:
    """Recompute each block's activations in backward instead of storing them. The block's
    forward is wrapped in place (state-dict keys are unchanged); without grad it runs as is."""
    for block in lm.layers:
        inner = block.forward

        def forward(self, *args, _inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)
        block.forward = types.MethodType(forward, block)


def compile_blocks(lm: nn.Module) -> None:
    """torch.compile each block's forward in place (state-dict keys are unchanged). Apply it after
    `enable_gradient_checkpointing` (the checkpointed forward is what gets compiled) and before
    FSDP2 sharding, so FSDP's hooks run outside the compiled code, per block. Forwards with a KV
    cache (generation: the shapes change every step) run eagerly."""
    for block in lm.layers:
        eager = block.forward
        compiled = torch.compile(eager)

        def forward(self, x, cos, sin, mask, cache, layer, start, _eager=eager, _compiled=compiled):
            run = _eager if cache is not None else _compiled
            return run(x, cos, sin, mask, cache, layer, start)
        block.forward = types.MethodType(forward, block)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether forward/backward run under bf16 autocast: "bf16", or "auto" on CUDA."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16 and device.type != "cuda":
        raise ValueError("precision='bf16' needs a CUDA device; use 'fp32' on CPU")
    return bf16


def export_policy(actor: ResponseModel, dist: DistInfo, out_dir: str | Path, dtype: torch.dtype) -> None:
    """The policy in HF format (config.json + model.safetensors) in `dtype`, LoRA adapters
    merged, written by rank 0 (a collective under FSDP: every rank calls it)."""
    state = {k[len("lm."):]: v for k, v in merge_lora_state(full_model_state(actor, dist)).items()
             if k.startswith("lm.")}
    if dist.is_main:
        from deepretrieval.model.hf_weights import save_hf
        # save_hf reads only the architecture from the model object, the weights are `state`
        save_hf(actor.lm, out_dir, {k: v.detach().to("cpu", dtype) for k, v in state.items()})

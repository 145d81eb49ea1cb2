"""The modules the trainer optimises: a causal LM seen through its response tokens, with an
optional value head.

    actor = ResponseModel(lm)                                     # log-probs (+ entropy)
    actor = ResponseModel(lm, value_head=True)                     # PPO, critic on the shared trunk
    critic = ResponseModel(critic_copy(lm), policy=False, value_head=True)   # PPO, separate critic
    out = actor(input_ids, attention_mask, prompt_len, temperature=1.0, entropy=True)
    out.logprobs, out.entropy, out.values                         # each [B, R] (R = T - prompt_len)

`lm` is model.transformer.Transformer (anything with `forward_hidden`, `logits` and `layers`).
Sequences are [left-padded prompt | right-padded response], the prompt part `prompt_len` wide.
The hidden state at position t predicts token t + 1, so the response's outputs come from the
slice [prompt_len - 1, T - 1): the LM head runs on response positions only (a 256-token prompt
costs no vocabulary projection), and the value at a token is the value of the state it is
generated from (as verl's critic).

The wrapper is the FSDP root: its `forward` is the one entry point, so FSDP2's hooks see every
use of the embeddings, final norm and heads.
"""
from __future__ import annotations

import copy
import types
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.sampler import token_logprobs
from rl.losses import entropy_from_logits


class ResponseOutputs(NamedTuple):
    logprobs: torch.Tensor | None   # [B, R] log p(response token) under softmax(logits / T)
    entropy: torch.Tensor | None    # [B, R]
    values: torch.Tensor | None     # [B, R]


class ResponseModel(nn.Module):
    def __init__(self, lm: nn.Module, policy: bool = True, value_head: bool = False):
        super().__init__()
        self.lm = lm
        self.policy = policy
        hidden = lm.cfg.hidden_size
        # Zero init: the critic starts by predicting 0 everywhere instead of noise.
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(dtype=lm.dtype, device=lm.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                temperature: float = 1.0, entropy: bool = False) -> ResponseOutputs:
        hidden = self.lm.forward_hidden(input_ids, attention_mask)       # [B, T, C]
        h = hidden[:, prompt_len - 1:-1]                                  # [B, R, C]
        logprobs = ent = values = None
        if self.policy:
            logits = self.lm.logits(h)                                    # [B, R, V] fp32
            if temperature != 1.0:
                logits = logits / temperature
            logprobs = token_logprobs(logits, input_ids[:, prompt_len:], 1.0)    # temperature applied above
            if entropy:
                ent = entropy_from_logits(logits)
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

"""LoRA for the policy: low-rank adapters on chosen linear layers, everything else frozen.

    from deepretrieval.rl.lora import apply_lora, adapters_disabled, merge_lora_state
    apply_lora(lm, LoRAConfig(rank=16, alpha=32.0, target_modules=("q_proj", "v_proj")))
    logits = lm(ids)                               # W x + b + (alpha / rank) * B (A x)
    with adapters_disabled(lm):
        base_logits = lm(ids)                      # the frozen base model
    plain = merge_lora_state(lm.state_dict())      # W + (alpha / rank) * B @ A under the base keys

A [rank, in] starts Kaiming-uniform and B [out, rank] at zero (as PEFT), so a fresh adapter
changes nothing: LoRA's first step sees exactly the base model, as full fine-tuning's does.
Dropout on the adapter input is 0. The base keys stay what they were (`layers.0.attn.wq.weight`);
an adapted layer adds `...wq.lora_A`, `...wq.lora_B` and the 0-d buffer `...wq.lora_scale`
(alpha / rank), so a state dict says everything `merge_lora_state` needs, whatever its prefix.

`target_modules` uses the Hugging Face names (as PEFT's): q_proj, k_proj, v_proj, o_proj,
gate_proj, up_proj, down_proj; the embeddings and the LM head are never adapted.

In the trainers (rl/trainer.py, rl/sft.py) only the adapters (and PPO's value head) train; the
RL reference model is `FrozenBase(actor)`, the policy with its adapters off, so the base weights
exist once; the sampler's rollout copy and the export receive merged weights, so generation and
transformers see a plain model. A checkpoint holds base and adapters (the run's exact state);
deepretrieval.policy.load_policy merges them.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from deepretrieval.rl.config import LoRAConfig

# HF name -> (sub-module of a block, our attribute)
_MODULES = {"q_proj": ("attn", "wq"), "k_proj": ("attn", "wk"), "v_proj": ("attn", "wv"),
            "o_proj": ("attn", "wo"), "gate_proj": ("mlp", "gate"), "up_proj": ("mlp", "up"),
            "down_proj": ("mlp", "down")}
_SUFFIXES = (".lora_A", ".lora_B", ".lora_scale")


class LoRALinear(nn.Linear):
    """nn.Linear (the same weight and bias objects, frozen) plus scale * B @ A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))          # PEFT's init of A
        self.register_buffer("lora_scale", torch.tensor(alpha / rank, dtype=torch.float32,
                                                        device=w.device))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:                # [..., in] -> [..., out]
        y = F.linear(x, self.weight, self.bias)
        if not self.enabled:
            return y
        return y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.lora_scale   # [..., r] inside


def apply_lora(lm: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze every parameter of `lm` (model.transformer.Transformer) and put adapters on the
    target layers of every block; returns the adapted modules' names."""
    lm.requires_grad_(False)
    names = []
    for i, block in enumerate(lm.layers):
        for target in cfg.target_modules:
            part, attr = _MODULES[target]
            parent = getattr(block, part)
            setattr(parent, attr, LoRALinear(getattr(parent, attr), cfg.rank, cfg.alpha))
            names.append(f"layers.{i}.{part}.{attr}")
    return names


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run `model` as its frozen base inside the block."""
    modules = lora_modules(model)
    for m in modules:
        m.enabled = False
    try:
        yield
    finally:
        for m in modules:
            m.enabled = True


def merge_lora_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with adapters -> the plain one: W + scale * B @ A (computed in fp32, stored
    in W's dtype) under W's key, the adapter entries dropped. Without adapters: a plain copy."""
    out = {k: v for k, v in state.items() if not k.endswith(_SUFFIXES)}
    for key in state:
        if key.endswith(".lora_A"):
            prefix = key[:-len(".lora_A")]
            w = state[prefix + ".weight"]
            delta = state[prefix + ".lora_B"].float() @ state[key].float()      # [out, in]
            scale = state[prefix + ".lora_scale"].float()
            out[prefix + ".weight"] = (w.float() + scale * delta).to(w.dtype)
    return out


def merged_copy(lm: nn.Module) -> nn.Module:
    """A plain copy of an adapted model (nn.Linear layers with merged weights), e.g. to evaluate
    it with the fast decoder, which reads weights, not modules."""
    plain = copy.deepcopy(lm)
    state = merge_lora_state(plain.state_dict())
    for name, module in list(plain.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, attr = name.rpartition(".")
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                               device="meta")
            linear.weight = nn.Parameter(state[name + ".weight"], requires_grad=False)
            linear.bias = module.bias
            setattr(plain.get_submodule(parent_name), attr, linear)
    return plain


class FrozenBase:
    """The reference policy of a LoRA run: the actor (rl.models.ResponseModel) called with its
    adapters off. It owns no weights."""

    def __init__(self, actor: nn.Module):
        self.actor = actor

    def __call__(self, *args, **kwargs):
        with adapters_disabled(self.actor):
            return self.actor(*args, **kwargs)

    def parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

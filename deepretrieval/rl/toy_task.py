"""A synthetic task for exercising the RL loop without a search engine: learn to emit a target
character. Used by the tests (learning, 1-vs-2 processes, exact resume) and as a smoke test.

    python -m deepretrieval.rl.toy_task --run-dir runs/toy --algorithm grpo --steps 30
    torchrun --nproc_per_node=2 -m deepretrieval.rl.toy_task --run-dir runs/toy2 --algorithm grpo --steps 3
    python -m deepretrieval.rl.toy_task --run-dir runs/toy_ds --dynamic-sampling
    python -m deepretrieval.rl.toy_task --run-dir runs/toy_lora --lora-rank 8
    torchrun --nproc_per_node=2 -m deepretrieval.rl.toy_task --run-dir runs/toy_gpu --device cuda --precision bf16

Pieces: `CharTokenizer` (32 ids: a-z, space, '.', <pad>, <eos>, two spares), `tiny_model(seed)`
(the project's Transformer, 2 layers, hidden 64, random init), `TargetCharTask` (prompts are
random lower-case words; reward = share of the `max_len` completion characters that equal the
target, so chance level is about 1/32 and the optimum, 1.0, is the target repeated to the length
limit).
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import string

import torch

from deepretrieval.model.config import ModelConfig
from deepretrieval.model.transformer import Transformer
from deepretrieval.rl.config import LoRAConfig, OptimConfig, RLConfig, SamplingConfig
from deepretrieval.rl.interfaces import Prompt, RewardResult

PAD, EOS = "<pad>", "<eos>"


class CharTokenizer:
    """One id per character; ids 28/29 are <pad>/<eos>."""
    chars = string.ascii_lowercase + " ."

    def __init__(self):
        self.vocab = list(self.chars) + [PAD, EOS, "<unused0>", "<unused1>"]
        self.pad_token_id = self.vocab.index(PAD)
        self.eos_token_id = self.vocab.index(EOS)
        self.stop_token_ids = [self.eos_token_id]
        self.chat_template = None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        bad = sorted(set(text) - set(self.chars))
        if bad:
            raise ValueError(f"CharTokenizer cannot encode {bad}; it knows {self.chars!r}")
        return [self.chars.index(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.vocab[i] for i in ids
                       if not (skip_special_tokens and i >= len(self.chars)))


def tiny_config(vocab_size: int = 32) -> ModelConfig:
    return ModelConfig(model_type="llama", vocab_size=vocab_size, hidden_size=64,
                       intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0,
                       max_position_embeddings=256)


def tiny_model(seed: int = 0) -> Transformer:
    """A randomly initialised tiny Transformer (normal(0, 0.02) weights, as HF's init)."""
    g = torch.Generator().manual_seed(seed)
    model = Transformer(tiny_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


@dataclasses.dataclass(frozen=True)
class TargetCharTask:
    target: str = "a"
    max_len: int = 4
    num_prompts: int = 64
    seed: int = 0

    def prompts(self) -> list[Prompt]:
        rng = random.Random(self.seed)
        words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
                 for _ in range(self.num_prompts)]
        return [Prompt(text=w + ".", meta={"word": w}) for w in words]

    def reward(self, prompts: list[Prompt], completions: list[str], **meta) -> RewardResult:
        hits = [c[:self.max_len].count(self.target) for c in completions]
        return RewardResult([h / self.max_len for h in hits],
                            [{"hits": h, "chars": len(c)} for h, c in zip(hits, completions)])


def toy_config(algorithm: str = "grpo", **overrides) -> RLConfig:
    """Settings under which the tiny model learns the toy task in a few dozen CPU steps."""
    base = RLConfig(
        algorithm=algorithm, seed=0, total_steps=30, prompts_per_step=16,
        group_size=8 if algorithm == "grpo" else 1, mini_batch_prompts=8, micro_batch_size=32,
        sampling=SamplingConfig(max_new_tokens=4, temperature=1.0),
        kl_coef=0.001, kl_estimator="k3" if algorithm == "grpo" else "k1",
        kl_mode="loss" if algorithm == "grpo" else "reward",
        actor_optim=OptimConfig(lr=1e-2, weight_decay=0.0),
        critic_optim=OptimConfig(lr=1e-2, weight_decay=0.0),
        precision="fp32", reward_workers=2, checkpoint_every=1000, plot_every=1000,
        log_rollouts=2)
    return dataclasses.replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    from deepretrieval.rl.trainer import train
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--algorithm", default="grpo", choices=["grpo", "ppo"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--chunk-prompts", type=int, default=None,
                   help="prompts per sampler call (fix it to make runs rank-count invariant)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (NCCL under torchrun)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--dynamic-sampling", action="store_true",
                   help="GRPO: train only on groups with unequal rewards (rl/dynamic_sampling.py)")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of this rank (0 = off)")
    a = p.parse_args(argv)
    cfg = toy_config(a.algorithm, total_steps=a.steps, rollout_chunk_prompts=a.chunk_prompts,
                     checkpoint_every=a.checkpoint_every, precision=a.precision,
                     actor_optim=OptimConfig(lr=a.lr, weight_decay=0.0),
                     dynamic_sampling=a.dynamic_sampling, lora=LoRAConfig(rank=a.lora_rank))
    metrics = train(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), a.run_dir,
                    resume=a.resume, device=a.device)
    print(f"final reward/mean {metrics.get('reward/mean', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

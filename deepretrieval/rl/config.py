"""RL and SFT run configuration: frozen dataclasses, a dict/TOML round trip, the paper's presets.

    from deepretrieval.rl.config import RLConfig, SFTConfig, paper_ppo, grpo_default
    cfg = RLConfig.from_dict(tomllib.load(f)["rl"])       # unknown keys are an error
    cfg = dataclasses.replace(cfg, total_steps=10)
    json.dumps(cfg.to_dict())                            # what a run writes as resolved config
    sft = SFTConfig.from_dict(tomllib.load(f)["sft"])     # `deepretrieval sft` (rl/sft.py)

Batch vocabulary (as verl, counted in prompts, not sequences):
  prompts_per_step   prompts drawn per RL step (the paper's train_batch_size = 64);
                     each yields `group_size` completions (GRPO n; PPO uses 1).
  mini_batch_prompts prompts per optimiser step (the paper's ppo_mini_batch_size = 16), so one RL
                     step makes prompts_per_step / mini_batch_prompts optimiser steps per epoch.
  micro_batch_size   sequences per forward/backward on one rank (gradient accumulation).
  rollout_chunk_prompts  prompts per sampler call on one rank; each chunk's sampling RNG is seeded
                     from (seed, step, first global prompt index), so with a fixed chunk size the
                     rollouts do not depend on the number of ranks. None = the rank's whole shard
                     in one call (fastest on GPU).

Options beyond the paper's recipe (each off by default; TOML keys under [rl]):
  dynamic_sampling = true        GRPO: drop groups whose completions all got the same reward and
  dynamic_sampling_extra_rounds  generate up to this many more rounds of prompts_per_step prompts
                     (default 3) until prompts_per_step groups have unequal rewards; fill from the
                     zero-variance groups when the rounds run out (DAPO; rl/dynamic_sampling.py).
                     Metrics: groups/zero_variance (logged for every GRPO step, with or without
                     the option), groups/rounds, groups/fillers, reward/generated_mean.
  [rl.lora] rank, alpha, target_modules   LoRA on the policy (rank 0 = off): only the adapters
                     train, the reference is the frozen base with the adapters off (no second
                     copy of the weights), the export is merged (rl/lora.py).
  tensorboard = true TensorBoard event files of every metric beside metrics.jsonl (optional
                     package: deepretrieval[tensorboard]); wandb_project = "name": also log to
                     Weights & Biases (optional package wandb) (rl/trackers.py).
SFT, the cold start before RL ([sft], `deepretrieval sft`, rl/sft.py): epochs, batch_size (traces
per optimiser step), micro_batch_size, max_tokens, [sft.optim], [sft.lora], precision,
gradient_checkpointing, checkpoint_every, tensorboard, wandb_project; RL then starts from its
export with model.name = "<sft run dir>/export".
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from deepretrieval.rl.losses import AGGREGATIONS, KL_ESTIMATORS

ALGORITHMS = ("grpo", "ppo")
KL_MODES = ("loss", "reward")
CRITIC_MODES = ("separate", "shared")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, then constant or cosine decay to min_lr_ratio * lr."""
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 0          # optimiser steps
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping

    def __post_init__(self):
        _check(self.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}")
        _check(self.lr > 0 and self.warmup_steps >= 0, "optim.lr must be > 0, warmup_steps >= 0")


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                 # 0 = off

    def __post_init__(self):
        _check(self.temperature > 0, "sampling.temperature must be > 0 for RL (log-probs need a "
                                     "proper distribution)")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters on the policy (rl/lora.py): rank 0 = full fine-tuning. The update is
    (alpha / rank) * B @ A on each target layer of every block (Hugging Face names, as PEFT's
    target_modules; all seven = PEFT's "all-linear" minus the head); dropout is 0."""
    rank: int = 0
    alpha: float = 16.0
    target_modules: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        _check(self.rank >= 0 and self.alpha > 0, "lora.rank must be >= 0 and lora.alpha > 0")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        _check(not unknown and (self.rank == 0 or self.target_modules),
               f"lora.target_modules must be a non-empty subset of {LORA_TARGETS}, "
               f"got {unknown or '[]'}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass(frozen=True)
class RLConfig:
    algorithm: str = "grpo"
    seed: int = 0
    total_steps: int = 100
    max_minutes: float = 0.0       # wall-clock budget of the loop (0 = none): stop after the step
                                   # that uses it up (checkpointed like the last step); a
                                   # resumed run counts the time before it (in the checkpoint)
    prompts_per_step: int = 64
    group_size: int = 8
    mini_batch_prompts: int = 16
    micro_batch_size: int = 8
    epochs_per_step: int = 1       # passes over one step's rollouts (ppo_epochs)
    rollout_chunk_prompts: int | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # GRPO dynamic sampling (DAPO, rl/dynamic_sampling.py): drop groups whose rewards are all
    # equal and generate up to `dynamic_sampling_extra_rounds` more rounds of prompts_per_step
    # prompts until the step has prompts_per_step groups with unequal rewards
    dynamic_sampling: bool = False
    dynamic_sampling_extra_rounds: int = 3
    # policy loss
    clip_low: float = 0.2
    clip_high: float = 0.2
    loss_aggregation: str = "token"
    normalize_std: bool = True     # GRPO: divide by the group std
    entropy_coef: float = 0.0
    # KL to the frozen reference
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    kl_mode: str = "loss"          # "loss": term in the actor loss; "reward": shaped token reward
    # PPO critic
    gamma: float = 1.0
    lam: float = 1.0
    whiten_advantages: bool = True
    critic: str = "separate"       # value head on a copy of the policy, or on the policy's trunk
    value_clip: float | None = 0.5
    value_coef: float = 0.5        # weight of the value loss when the trunk is shared
    actor_optim: OptimConfig = field(default_factory=OptimConfig)
    critic_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    # LoRA on the policy (a separate PPO critic stays a full copy): the reference is the frozen
    # base with the adapters off, the rollout copy and the export get merged weights
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # systems
    precision: str = "auto"        # auto = bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    compile_blocks: bool = False   # torch.compile every transformer block of the actor, critic and
                                   # reference (their forwards and backwards; generation stays
                                   # eager); the first steps pay the compilation
    keep_head_logits: bool = False # the actor's LM head keeps its forward logits for backward
                                   # (bf16: 2 bytes x tokens x vocab per micro-batch, 5 GB at
                                   # 32 x 512 response tokens and Qwen's vocabulary) instead of
                                   # recomputing them: a quarter of the head's matmuls saved
    reward_workers: int = 4
    reward_pool: str = "thread"    # "thread" or "process" (reward fn must then be picklable)
    # outputs
    checkpoint_every: int = 50     # steps; the last step is always saved
    keep_checkpoints: int = 2
    log_rollouts: int = 4          # rollouts per step written to rollouts.jsonl
    plot_every: int = 10
    tensorboard: bool = False      # TensorBoard event files of every metric beside metrics.jsonl
                                   # (needs the tensorboard package: deepretrieval[tensorboard])
    wandb_project: str | None = None   # also log to this Weights & Biases project (needs wandb)

    def __post_init__(self):
        _check(self.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}")
        _check(self.loss_aggregation in AGGREGATIONS, f"loss_aggregation must be one of {AGGREGATIONS}")
        _check(self.kl_estimator in KL_ESTIMATORS, f"kl_estimator must be one of {KL_ESTIMATORS}")
        _check(self.kl_mode in KL_MODES, f"kl_mode must be one of {KL_MODES}")
        _check(self.critic in CRITIC_MODES, f"critic must be one of {CRITIC_MODES}")
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        _check(self.reward_pool in ("thread", "process"), "reward_pool must be 'thread' or 'process'")
        _check(self.max_minutes >= 0, "max_minutes must be >= 0 (0 = no time limit)")
        _check(self.group_size >= 1 and self.micro_batch_size >= 1, "group_size, micro_batch_size >= 1")
        _check(self.algorithm != "grpo" or self.group_size >= 2,
               "GRPO needs group_size >= 2 (advantages compare completions of one prompt)")
        _check(self.algorithm != "grpo" or self.kl_mode == "loss",
               "GRPO takes the KL as a loss term (kl_mode='loss'); 'reward' is PPO's token reward")
        _check(not self.dynamic_sampling or self.algorithm == "grpo",
               "dynamic_sampling filters GRPO groups; it needs algorithm='grpo'")
        _check(self.dynamic_sampling_extra_rounds >= 0, "dynamic_sampling_extra_rounds must be >= 0")
        _check(self.prompts_per_step % self.mini_batch_prompts == 0,
               f"prompts_per_step={self.prompts_per_step} must be a multiple of "
               f"mini_batch_prompts={self.mini_batch_prompts}")

    @property
    def num_mini_batches(self) -> int:
        return self.prompts_per_step // self.mini_batch_prompts

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps of the whole run (the learning-rate schedule's length)."""
        return self.total_steps * self.epochs_per_step * self.num_mini_batches

    def check_world(self, world_size: int) -> None:
        """The mini-batch must split evenly over ranks (and over rollout chunks)."""
        _check(self.mini_batch_prompts % world_size == 0,
               f"mini_batch_prompts={self.mini_batch_prompts} must be a multiple of the number of "
               f"processes ({world_size})")
        per_rank = self.mini_batch_prompts // world_size
        _check(self.rollout_chunk_prompts is None or per_rank % self.rollout_chunk_prompts == 0,
               f"rollout_chunk_prompts={self.rollout_chunk_prompts} must divide mini_batch_prompts "
               f"/ processes = {per_rank}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLConfig":
        return _from_dict(cls, d, "rl")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on chat traces, the cold start before RL (rl/sft.py,
    `deepretrieval sft`): loss = mean negative log-likelihood of the final assistant turn's tokens
    (its end-of-turn token included), everything before it is context."""
    seed: int = 0
    epochs: float = 1.0            # passes over the traces (steps = ceil(epochs * traces / batch))
    batch_size: int = 16           # traces per optimiser step, over all ranks together
    micro_batch_size: int = 4      # traces per forward/backward on one rank
    max_tokens: int = 2048         # a longer trace is an error, never cut
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    precision: str = "auto"        # as RLConfig.precision
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0      # steps between checkpoints (0 = only the last step)
    keep_checkpoints: int = 2
    plot_every: int = 10
    tensorboard: bool = False      # as RLConfig.tensorboard
    wandb_project: str | None = None

    def __post_init__(self):
        _check(self.epochs > 0 and self.batch_size >= 1 and self.micro_batch_size >= 1,
               "sft.epochs must be > 0, sft.batch_size and sft.micro_batch_size >= 1")
        _check(self.precision in PRECISIONS, f"sft.precision must be one of {PRECISIONS}")
        _check(self.max_tokens >= 2 and self.checkpoint_every >= 0,
               "sft.max_tokens must be >= 2 and sft.checkpoint_every >= 0")

    def total_steps(self, num_traces: int) -> int:
        return math.ceil(self.epochs * num_traces / self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SFTConfig":
        return _from_dict(cls, d, "sft")


def _from_dict(cls, d: dict[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{where}]; known: {sorted(fields)}")
    kwargs = {}
    for name, value in d.items():
        sub = {"sampling": SamplingConfig, "actor_optim": OptimConfig, "critic_optim": OptimConfig,
               "optim": OptimConfig, "lora": LoRAConfig}
        if name in sub and isinstance(value, dict):
            value = _from_dict(sub[name], value, f"{where}.{name}")
        elif isinstance(value, list):                # JSON / TOML arrays of tuple fields
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def paper_ppo(**overrides) -> RLConfig:
    """DeepRetrieval's PPO (verl): actor lr 1e-6, critic lr 1e-5, KL 0.001 in the reward, entropy
    0.001, clip 0.2, gamma = lambda = 1, batch 64, mini-batch 16, one completion per prompt."""
    base = RLConfig(algorithm="ppo", prompts_per_step=64, group_size=1, mini_batch_prompts=16,
                    clip_low=0.2, clip_high=0.2, entropy_coef=0.001, kl_coef=0.001,
                    kl_estimator="k1", kl_mode="reward", gamma=1.0, lam=1.0,
                    actor_optim=OptimConfig(lr=1e-6), critic_optim=OptimConfig(lr=1e-5))
    return dataclasses.replace(base, **overrides)


def grpo_default(**overrides) -> RLConfig:
    """GRPO as in verl's recipe: 8 completions, std-normalised advantages, k3 KL 0.001 as a loss
    term, token-level averaging, no entropy bonus."""
    base = RLConfig(algorithm="grpo", group_size=8, kl_coef=0.001, kl_estimator="k3",
                    kl_mode="loss", entropy_coef=0.0, actor_optim=OptimConfig(lr=1e-6))
    return dataclasses.replace(base, **overrides)

"""One GRPO step at Qwen2.5-0.5B shapes: time split generate / reward / train, train MFU, memory.

    python -m bench.grpo_step                          # GPU: 64 prompts x 256 tokens, 8 completions
                                                       #      each, 512 new tokens, bf16
    python -m bench.grpo_step --peak-tflops 989        # H100 SXM bf16 dense (the default)
    python -m bench.grpo_step --tiny                   # CPU smoke run at toy shapes (not logged)
    python -m bench.grpo_step --micro-batch 16 --gradient-checkpointing --compile
    torchrun --nproc_per_node=2 -m bench.grpo_step     # FSDP2 over 2 GPUs, same global batch
    python -m bench.grpo_step --steps 2 --compile --keep-logits   # the fastest setting (+5 GB)
    python -m bench.grpo_step --steps 1 --compile --profile   # + one extra step's prepare and
                                                       #   update profiled: GPU time by kind of
                                                       #   kernel, idle gaps, top kernels

Random weights (normal(0, 0.02)) with the real Qwen2.5-0.5B config: nothing depends on weight
values except when generation stops, and random weights never emit a stop token, so every
completion runs to `--new-tokens` (the worst case the step must handle). Prompts are random
token ids; the tokenizer spells ids as numbers (decoding costs about what a real one does), and
the reward does a little string work per completion (a regex count), through the reward pool.

Reported (and appended to bench/results/grpo_step.jsonl):
  time/generate, time/reward (reward time not hidden behind generation), time/prepare (old and
  reference log-probs), time/train (prepare + optimiser update), the step's share of each;
  train MFU = 6 * params * tokens / time/update / peak  (the update: forward + backward of every
  token of every sequence once per epoch), and the same with the prepare forwards
  (2 * params * tokens each) over time/train; peak GPU memory.
`params` counts every weight once (the tied LM head included). The formula ignores attention's
quadratic term (undercounts) and that our LM head runs on response positions only (overcounts);
at the default shapes it counts about 6 % more than the update executes. So the run also prints
the executed-FLOP figure (`mfu_update_executed`: trunk matmuls on every token, LM head on
response tokens, causal attention's two matmuls; forward + backward = 3 forwards).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import time

import torch

from bench.gpu_profile import print_kernel_profile
from bench.results_log import append_result
from deepretrieval.model.config import ModelConfig
from deepretrieval.model.transformer import Transformer
from deepretrieval.rl.config import OptimConfig, RLConfig, SamplingConfig
from deepretrieval.rl.distributed import DistInfo, finish
from deepretrieval.rl.interfaces import Prompt, RewardResult
from deepretrieval.rl.trainer import Trainer

QWEN25_05B = ModelConfig(model_type="qwen2", vocab_size=151936, hidden_size=896,
                         intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2,
                         head_dim=64, rms_norm_eps=1e-6, rope_theta=1_000_000.0, qkv_bias=True,
                         tie_word_embeddings=True, max_position_embeddings=32768)
TINY = dataclasses.replace(QWEN25_05B, vocab_size=512, hidden_size=64, intermediate_size=128,
                           num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)


class NumberTokenizer:
    """Token ids written as space-separated numbers; no stop tokens."""
    pad_token_id = 0
    stop_token_ids: list[int] = []
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(map(str, ids))


@dataclasses.dataclass(frozen=True)
class RandomPromptTask:
    num_prompts: int
    prompt_len: int
    vocab: int

    def prompts(self) -> list[Prompt]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, self.vocab, (self.num_prompts, self.prompt_len), generator=g)
        return [Prompt(text=" ".join(map(str, row.tolist()))) for row in ids]

    def reward(self, prompts, completions, **meta) -> RewardResult:
        hits = [len(re.findall(r"\b\d*7\b", c)) for c in completions]
        return RewardResult([h / max(1, len(c.split())) for h, c in zip(hits, completions)])


def update_flops(cfg: ModelConfig, n_params: int, seqs: int, prompt_len: int,
                 response_len: float) -> float:
    """FLOPs one epoch of the update executes: forward + backward (3 forwards) of the trunk's
    matmuls on every token, the LM head on response tokens only, causal attention's QK^T and PV."""
    T = prompt_len + response_len
    head = cfg.vocab_size * cfg.hidden_size
    trunk = 2 * (n_params - head * (1 if cfg.tie_word_embeddings else 2)) * T   # embeddings: lookups
    lm_head = 2 * head * response_len
    attention = 2 * 2 * (T * T / 2) * cfg.num_heads * cfg.head_dim * cfg.num_layers
    return 3 * seqs * (trunk + lm_head + attention)


def random_model(cfg: ModelConfig, device: str) -> Transformer:
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model.to(torch.bfloat16)      # "random bf16 weights"; the trainer keeps fp32 masters


def profile_phases(trainer: Trainer, cuda: bool) -> dict:
    """Wrap the trainer's prepare and update passes in torch.profiler (GPU kernels on CUDA, CPU
    ops otherwise); returns the dict that fills with phase -> (wall seconds, profiler) as they run."""
    from torch.profiler import ProfilerActivity, profile
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    phases: dict = {}
    for name in ("_prepare", "_update"):
        inner = getattr(trainer, name)

        def run(*args, _inner=inner, _name=name[1:], **kwargs):
            sync()
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
                out = _inner(*args, **kwargs)
                sync()
            phases[_name] = (time.perf_counter() - start, prof)
            return out
        setattr(trainer, name, run)
    return phases


def print_profile(phases: dict, cuda: bool) -> None:
    for name, (seconds, prof) in phases.items():
        print_kernel_profile(f"{name}: wall {seconds:.2f} s (profiled)", prof, cuda)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with --tiny's toy shapes filled in."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy shapes on CPU (a smoke run)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--mini-batch-prompts", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=32,
                   help="sequences per forward/backward (32 fits an 80 GB GPU with the fused head)")
    p.add_argument("--steps", type=int, default=2, help="measured steps (after one warm-up step)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every transformer block (RLConfig.compile_blocks)")
    p.add_argument("--keep-logits", action="store_true",
                   help="the LM head keeps its forward logits for backward (RLConfig.keep_head_logits: "
                        "+5 GB at micro-batch 32, a quarter of the head's matmuls saved)")
    p.add_argument("--profile", action="store_true",
                   help="after the measured steps, profile one more step's prepare and update (GPU kernels; "
                        "CPU ops on CPU)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="hardware peak for MFU (H100 SXM bf16 dense: 989)")
    a = p.parse_args(argv)
    if a.tiny:
        a.prompts, a.group_size, a.prompt_len, a.new_tokens = 8, 4, 16, 16
        a.mini_batch_prompts, a.micro_batch, a.steps = 4, 8, 1
    return a


def bench_device(a: argparse.Namespace) -> str:
    return "cpu" if a.tiny or not torch.cuda.is_available() else "cuda"


def rl_config(a: argparse.Namespace) -> RLConfig:
    """The GRPO step the bench runs (the rest are RLConfig's defaults, i.e. configs/_grpo.toml's)."""
    return RLConfig(algorithm="grpo", total_steps=a.steps + 1 + a.profile, prompts_per_step=a.prompts,
                    group_size=a.group_size, mini_batch_prompts=a.mini_batch_prompts,
                    micro_batch_size=a.micro_batch,
                    sampling=SamplingConfig(max_new_tokens=a.new_tokens, temperature=1.0),
                    kl_coef=0.001, actor_optim=OptimConfig(lr=1e-6),
                    precision="bf16" if bench_device(a) == "cuda" else "fp32",
                    gradient_checkpointing=a.gradient_checkpointing, compile_blocks=a.compile,
                    keep_head_logits=a.keep_logits, reward_workers=4,
                    checkpoint_every=10**9)


def run(a: argparse.Namespace) -> tuple[dict, list[dict], DistInfo]:
    """One warm-up step, `a.steps` measured steps (and the profiled one with --profile); prints
    each step's times and the MFU line. Returns the record (means over the measured steps), each
    measured step's Trainer.train_step metrics, and the process group."""
    device = bench_device(a)
    mcfg = TINY if a.tiny else QWEN25_05B
    cfg = rl_config(a)
    task = RandomPromptTask(a.prompts * (a.steps + 1 + a.profile), a.prompt_len, mcfg.vocab_size)
    model = random_model(mcfg, device)
    n_params = sum(p.numel() for p in model.parameters())
    trainer = Trainer(cfg, model, NumberTokenizer(), task, "/tmp/bench_grpo_step", device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    say = print if trainer.dist.is_main else (lambda *_: None)
    rows = []
    for i in range(a.steps + 1):
        m = trainer.train_step()
        say(f"step {i} ({'warm-up' if i == 0 else 'measured'}): "
              + ", ".join(f"{k}={m[k]:.3f}" for k in ("time/generate", "time/reward",
                                                       "time/prepare", "time/train", "time/step")))
        if i:
            rows.append(m)
    if a.profile:                              # one more step, profiled, not in the numbers below
        phases = profile_phases(trainer, device == "cuda")
        trainer.train_step()
        if trainer.dist.is_main:
            print_profile(phases, device == "cuda")
    trainer.pool.close()
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    seqs = a.prompts * a.group_size
    tokens = seqs * (a.prompt_len + mean["response_length/mean"])       # per step, all ranks
    update_time = mean["time/train"] - mean["time/prepare"]
    forwards = 1 + (cfg.kl_coef > 0)                                    # old + reference log-probs
    peak = a.peak_tflops * 1e12 * trainer.dist.world_size               # all GPUs together
    mfu_update = 6 * n_params * tokens * cfg.epochs_per_step / update_time / peak
    mfu_executed = (update_flops(mcfg, n_params, seqs, a.prompt_len, mean["response_length/mean"])
                    * cfg.epochs_per_step / update_time / peak)
    mfu_train = (6 * cfg.epochs_per_step + 2 * forwards) * n_params * tokens / mean["time/train"] / peak
    step = mean["time/step"]
    record = {
        "model": "tiny" if a.tiny else "Qwen2.5-0.5B shapes", "params": n_params,
        "world_size": trainer.dist.world_size,
        "prompts": a.prompts, "group_size": a.group_size, "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens, "micro_batch": a.micro_batch,
        "gradient_checkpointing": a.gradient_checkpointing, "compile_blocks": a.compile,
        "keep_head_logits": a.keep_logits,
        "tokens_per_step": tokens,
        "time_generate_s": mean["time/generate"], "time_reward_s": mean["time/reward"],
        "time_prepare_s": mean["time/prepare"], "time_update_s": update_time,
        "time_train_s": mean["time/train"], "time_sync_s": mean["time/sync"], "time_step_s": step,
        "share_generate": mean["time/generate"] / step, "share_reward": mean["time/reward"] / step,
        "share_train": mean["time/train"] / step,
        "generate_tokens_per_s": mean["tokens_per_s/generate"],
        "mfu_update": mfu_update, "mfu_update_executed": mfu_executed, "mfu_train": mfu_train,
        "peak_tflops": a.peak_tflops,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "logprob_diff_max": mean["logprob_diff/max"],
    }
    say(f"train MFU (update) {mfu_update:.1%} of {a.peak_tflops:g} TFLOP/s "
        f"(executed FLOPs: {mfu_executed:.1%}); "
          f"with prepare forwards {mfu_train:.1%}; reward {record['share_reward']:.1%} of the step")
    return record, rows, trainer.dist


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    record, _, dist = run(a)
    if a.tiny:                        # a smoke run: print, keep the results file for real runs
        if dist.is_main:
            print(record)
    elif dist.is_main:
        append_result("grpo_step", record)
    finish(dist)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

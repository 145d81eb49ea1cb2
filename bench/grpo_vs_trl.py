"""One GRPO step of ours against TRL's `GRPOTrainer` on the same work, in the same process.

Time per step and its split generate / reward / prepare / update for both, and the speed-up.

    python -m bench.grpo_vs_trl                            # GPU: bench.grpo_step's step (64 prompts
                                                           #   x 8 completions, prompt 256, 512 new
                                                           #   tokens, bf16) against TRL's, 3 measured
    python -m bench.grpo_vs_trl --compile --keep-logits    # ours at its fastest setting: every option
                                                           #   of bench.grpo_step passes through
    python -m bench.grpo_vs_trl --trl-micro-batch 16       # TRL's per-device batch (default: ours)
    python -m bench.grpo_vs_trl --trl-dtype bfloat16       # TRL trains bf16 weights (no fp32 masters)
    python -m bench.grpo_vs_trl --tiny                     # CPU smoke run at toy shapes (not logged)

TRL is a benchmark-only dependency, imported here alone: `pip install trl` (it brings datasets,
pandas, pyarrow, dill, multiprocess, xxhash). A GPU machine without a registry installs the
wheels carried to it: `pip install --no-index --no-deps --target /tmp/site .gpu/trl_wheels/*.whl`
and PYTHONPATH=/tmp/site.

The same work on both sides:
  model    bench.grpo_step.random_model (Qwen2.5-0.5B config, normal(0, 0.02) weights), exported
           with save_hf; TRL loads that folder as a transformers Qwen2ForCausalLM, for the policy
           and for its reference model, so both start from the same weights.
  prompts  RandomPromptTask's (random token ids, exactly --prompt-len of them, written as
           numbers); TRL reads them through a word-level tokenizer where the word "i" is id i.
           TRL 1.16's GRPOConfig has no max_prompt_length: nothing is truncated on either side.
  stop     none can happen: ours has no stop token, and the tokenizer's EOS (TRL's pad too) is id
           `vocab`, one past the model's vocabulary, which sampling can never pick. Random weights
           never stop early anyway, so every completion runs to --new-tokens on both sides (the
           record keeps both mean completion lengths to show it).
  reward   RandomPromptTask.reward (a regex count per completion). TRL calls it inline, after
           generating; ours runs it in a pool of 4 reward threads.
  config   read off ours (bench.grpo_step.rl_config): num_generations = group_size; generation
           batch = prompts_per_step x group_size completions; gradient accumulation such that one
           optimiser step takes mini_batch_prompts x group_size completions (4 optimiser steps per
           RL step at the defaults, as ours), micro-batch = ours' unless --trl-micro-batch;
           num_iterations = epochs_per_step; max_completion_length = max_new_tokens; temperature,
           top_p, top_k; loss_type "dapo" (token-mean over the optimiser step's tokens = ours'
           "token" aggregation); epsilon / epsilon_high = clip_low / clip_high; beta = kl_coef (k3
           on both sides); scale_rewards "group" (= normalize_std); AdamW with ours' lr, betas, eps,
           weight decay, grad clip, constant schedule, the fused kernel on CUDA. Gradient
           checkpointing as ours (off by default; TRL's default is on). TRL's default precision:
           fp32 weights under bf16 autocast, as ours (fp32 masters, bf16 autocast); --trl-dtype
           bfloat16 gives TRL bf16 weights instead (less work for it).
  generation  transformers `generate` (use_vllm=False): vLLM cannot be installed on the GPU
           machine (no registry there; vllm 0.34's wheel is 228 MiB, over the 64 MiB a call
           carries, and it pins torch 2.13 where the machine has 2.11).
Differences left open (each is TRL's own way of doing the step): TRL computes the entropy of
every completion token in its training forward (for its logs; ours in its prepare pass, and for
the first optimiser step's rows in that step's forward);
its advantages divide by std + 1e-4 (ours + 1e-6); ours clamps k3's log-ratio to [-10, 10];
TRL shuffles the generation batch before cutting it into optimiser steps (ours keeps groups
together); ours' sampler also returns the sampling log-probs; ours' reference model keeps bf16
weights (TRL's: the policy's dtype); ours copies the new weights to its bf16 rollout model after
the update (in ours' "update" below), TRL generates with the policy itself. Two are ours' speed-ups
of the same work: the first optimiser step's old log-probs come from that step's own forward (the
step runs at the weights that TRL's prepare pass recomputes them with, so the ratio is 1 on both
sides, up to rounding), and each prompt is prefilled once for its 8 completions (TRL's `generate`
prefills all 512 rows).

Timing: one warm-up step, then --steps measured; medians. One TRL step = one generation cycle
(steps_per_generation x num_iterations micro-steps, i.e. the RL step's optimiser steps), timed
between the ends of its last optimiser steps (a callback, after a CUDA sync). Its split comes
from wrapping three methods of TRL 1.x's GRPOTrainer (checked at start; a missing one is an
error naming it): `_generate` (tokenise, generate, decode) = generate, `_calculate_rewards` =
reward, the rest of `_generate_and_score_completions` (old and reference log-probs,
advantages) = prepare, and the rest of the step (forward/backward, optimiser) = update. Ours:
Trainer.train_step's time/generate, time/reward, time/prepare, and update = the rest of
time/step (the optimiser steps, the rollout-model copy, bookkeeping).

Printed: a table of both sides and TRL / ours per column; appended to
bench/results/grpo_vs_trl.jsonl: both sides' medians, the speed-ups, TRL / transformers / torch
versions (the device is added by append_result), the settings and TRL's config.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

import torch

from bench import grpo_step
from bench.results_log import append_result
from deepretrieval.model.hf_weights import save_hf
from deepretrieval.rl.config import RLConfig

PARTS = ("generate", "reward", "prepare", "update", "step")
# GRPOTrainer methods timed for the split (TRL 1.x names)
TRL_GENERATE, TRL_REWARD, TRL_SCORE = "_generate", "_calculate_rewards", "_generate_and_score_completions"


def import_trl():
    try:
        import trl
    except ImportError as e:
        raise SystemExit(f"bench.grpo_vs_trl needs TRL ({e}): pip install trl (GPU machine: install "
                         "the carried wheels, see this module's docstring)") from e
    return trl


def number_tokenizer(vocab: int):
    """grpo_step.NumberTokenizer as a transformers tokenizer: the word "i" is id i, words split
    on whitespace, decoding joins them with spaces; EOS = pad = id `vocab`, outside the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    eos = "<eos>"
    tok = Tokenizer(models.WordLevel({**{str(i): i for i in range(vocab)}, eos: vocab}, unk_token=eos))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, padding_side="left")


def trl_config(cfg: RLConfig, out_dir: str, steps: int, micro_batch: int, cuda: bool, **overrides):
    """TRL's GRPOConfig for ours' RL step `cfg`, running 1 + `steps` RL steps."""
    from trl import GRPOConfig
    seqs = cfg.prompts_per_step * cfg.group_size
    mini = cfg.mini_batch_prompts * cfg.group_size            # completions per optimiser step
    opt = cfg.actor_optim
    if (mini % micro_batch or cfg.kl_estimator != "k3" or cfg.loss_aggregation != "token"
            or opt.schedule != "constant" or opt.warmup_steps):
        raise ValueError(f"no TRL equivalent: micro-batch {micro_batch} must divide {mini}; k3 KL, token "
                         f"aggregation and a constant learning rate only (got {cfg.kl_estimator}, "
                         f"{cfg.loss_aggregation}, {opt.schedule} with {opt.warmup_steps} warm-up steps)")
    return GRPOConfig(
        output_dir=out_dir, report_to="none", logging_strategy="no", save_strategy="no",
        eval_strategy="no", disable_tqdm=True, log_completions=False, seed=cfg.seed,
        use_cpu=not cuda, bf16=cuda, gradient_checkpointing=cfg.gradient_checkpointing,
        per_device_train_batch_size=micro_batch, gradient_accumulation_steps=mini // micro_batch,
        steps_per_generation=seqs // micro_batch, num_iterations=cfg.epochs_per_step,
        max_steps=(1 + steps) * cfg.epochs_per_step * cfg.num_mini_batches,
        num_generations=cfg.group_size, max_completion_length=cfg.sampling.max_new_tokens,
        temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, top_k=cfg.sampling.top_k,
        use_vllm=False, loss_type="dapo", beta=cfg.kl_coef, epsilon=cfg.clip_low,
        epsilon_high=cfg.clip_high, scale_rewards="group" if cfg.normalize_std else "none",
        mask_truncated_completions=False,
        optim="adamw_torch_fused" if cuda else "adamw_torch", learning_rate=opt.lr,
        adam_beta1=opt.betas[0], adam_beta2=opt.betas[1], adam_epsilon=opt.eps,
        weight_decay=opt.weight_decay, max_grad_norm=opt.grad_clip or 0.0,
        lr_scheduler_type="constant", **overrides)


def timed(method, seconds: list[float], sync):
    """`method`, appending the seconds of each call (GPU work included) to `seconds`."""
    def run(*args, **kwargs):
        sync()
        start = time.perf_counter()
        out = method(*args, **kwargs)
        sync()
        seconds.append(time.perf_counter() - start)
        return out
    return run


def time_trl(a: argparse.Namespace, cfg: RLConfig, trl_micro_batch: int, trl_dtype: str) -> tuple[list[dict], dict]:
    """Runs TRL's GRPOTrainer for 1 + a.steps RL steps on grpo_step's model, prompts and reward;
    returns the measured steps' times (seconds by PARTS) and facts of the run."""
    import datasets
    import trl
    from transformers import TrainerCallback
    cuda = grpo_step.bench_device(a) == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    mcfg = grpo_step.TINY if a.tiny else grpo_step.QWEN25_05B
    task = grpo_step.RandomPromptTask(a.prompts * (a.steps + 1), a.prompt_len, mcfg.vocab_size)

    def number_reward(prompts, completions, **_):     # TRL logs a reward under its function's name
        return task.reward(prompts, completions).rewards

    ends: list[float] = []                             # perf_counter at the end of each RL step
    trl_logs: dict = {}                                # TRL's metrics, averaged over the run
    per_step = cfg.epochs_per_step * cfg.num_mini_batches

    class StepEnds(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            sync()
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % per_step == 0:
                sync()
                ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):    # once, at the end
            trl_logs.update(logs or {})

    with tempfile.TemporaryDirectory() as tmp:
        save_hf(grpo_step.random_model(mcfg, "cuda" if cuda else "cpu"), f"{tmp}/model")
        gc.collect()
        args = trl_config(cfg, f"{tmp}/out", a.steps, trl_micro_batch, cuda,
                          model_init_kwargs={"dtype": trl_dtype})
        tokenizer = number_tokenizer(mcfg.vocab_size)
        prompts = datasets.Dataset.from_dict({"prompt": [p.text for p in task.prompts()]})
        trainer = trl.GRPOTrainer(f"{tmp}/model", number_reward, args=args, train_dataset=prompts,
                                  processing_class=tokenizer, callbacks=[StepEnds()])
        spent: dict[str, list[float]] = {}            # method -> seconds of each call
        for name in (TRL_GENERATE, TRL_REWARD, TRL_SCORE):
            if not callable(getattr(trainer, name, None)):
                raise SystemExit(f"TRL {trl.__version__}'s GRPOTrainer has no {name}(): bench.grpo_vs_trl "
                                 "times TRL 1.x's methods; update TRL_* in it for this version")
            spent[name] = []
            setattr(trainer, name, timed(getattr(trainer, name), spent[name], sync))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        facts = {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                 "response_length": float(trl_logs["completions/mean_length"]),
                 "model_dtype": str(trainer.model.dtype).removeprefix("torch."),
                 "config": {k: getattr(args, k) for k in (
                     "per_device_train_batch_size", "gradient_accumulation_steps",
                     "steps_per_generation", "generation_batch_size", "num_generations",
                     "num_iterations", "max_completion_length", "temperature", "loss_type",
                     "beta", "epsilon", "epsilon_high", "scale_rewards", "learning_rate",
                     "weight_decay", "max_grad_norm", "gradient_checkpointing", "bf16", "use_vllm")}}
        del trainer
    assert len(ends) == a.steps + 2 and all(len(v) == a.steps + 1 for v in spent.values()), (ends, spent)
    rows = []
    for i in range(1, a.steps + 1):                   # step 0 is the warm-up
        gen, reward, score = (spent[n][i] for n in (TRL_GENERATE, TRL_REWARD, TRL_SCORE))
        step = ends[i + 1] - ends[i]
        rows.append({"generate": gen, "reward": reward, "prepare": score - gen - reward,
                     "update": step - score, "step": step})
    return rows, facts


def ours_parts(m: dict) -> dict:
    """Trainer.train_step's metrics -> seconds by PARTS."""
    rest = m["time/generate"] + m["time/reward"] + m["time/prepare"]
    return {"generate": m["time/generate"], "reward": m["time/reward"], "prepare": m["time/prepare"],
            "update": m["time/step"] - rest, "step": m["time/step"]}


def medians(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in PARTS}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(this bench's options, bench.grpo_step's options for ours' side; --tiny: 1 measured step)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Other options go to bench.grpo_step (ours' side; the shapes "
                                       "and batch are read off it for TRL's side too).")
    p.add_argument("--steps", type=int, default=3, help="measured steps of each side (after one warm-up)")
    p.add_argument("--trl-micro-batch", type=int, default=None,
                   help="TRL's per_device_train_batch_size (default: ours' --micro-batch)")
    p.add_argument("--trl-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="TRL's weights: float32 under bf16 autocast (TRL's default, as ours) or bfloat16")
    own, rest = p.parse_known_args(argv)
    return own, grpo_step.parse_args(rest + ["--steps", str(own.steps)])


def compare(own: argparse.Namespace, a: argparse.Namespace) -> dict:
    """Runs both sides, prints the table; returns the record."""
    trl = import_trl()
    import transformers
    cfg = grpo_step.rl_config(a)
    print(f"== ours: bench.grpo_step, {a.steps} measured step(s)")
    ours_record, ours_rows, _ = grpo_step.run(a)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    micro = own.trl_micro_batch or a.micro_batch
    print(f"== TRL {trl.__version__} GRPOTrainer (transformers generate), micro-batch {micro}, "
          f"{own.trl_dtype} weights")
    trl_rows, trl_facts = time_trl(a, cfg, micro, own.trl_dtype)
    for i, r in enumerate(trl_rows, 1):
        print(f"TRL step {i} (measured): " + ", ".join(f"{k}={r[k]:.3f}" for k in PARTS))

    ours, theirs = medians([ours_parts(m) for m in ours_rows]), medians(trl_rows)
    speedup = {k: theirs[k] / ours[k] if ours[k] > 0 else None for k in PARTS}
    print(f"\nmedian seconds per GRPO step ({a.prompts} prompts x {a.group_size} completions, "
          f"prompt {a.prompt_len}, {a.new_tokens} new tokens)")
    print(f"{'':12s}" + "".join(f"{k:>10s}" for k in PARTS))
    for name, row in (("ours", ours), ("TRL", theirs)):
        print(f"{name:12s}" + "".join(f"{row[k]:10.3f}" for k in PARTS))
    print(f"{'TRL / ours':12s}" + "".join(f"{speedup[k]:9.2f}x" if speedup[k] else f"{'-':>10s}"
                                          for k in PARTS))
    return {
        "model": "tiny" if a.tiny else "Qwen2.5-0.5B shapes", "params": ours_record["params"],
        "prompts": a.prompts, "group_size": a.group_size, "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens, "mini_batch_prompts": a.mini_batch_prompts,
        "optimizer_steps_per_step": cfg.epochs_per_step * cfg.num_mini_batches,
        "micro_batch": a.micro_batch, "trl_micro_batch": micro, "steps": a.steps,
        "compile_blocks": a.compile, "keep_head_logits": a.keep_logits,
        "gradient_checkpointing": a.gradient_checkpointing, "kl_coef": cfg.kl_coef,
        "clip": [cfg.clip_low, cfg.clip_high],
        "ours": {**{f"{k}_s": v for k, v in ours.items()},
                 "response_length": statistics.mean(m["response_length/mean"] for m in ours_rows),
                 "peak_memory_gib": ours_record["peak_memory_gib"]},
        "trl": {**{f"{k}_s": v for k, v in theirs.items()}, "response_length": trl_facts["response_length"],
                "peak_memory_gib": trl_facts["peak_memory_gib"], "model_dtype": trl_facts["model_dtype"],
                "generation": "transformers generate (use_vllm=False)", "config": trl_facts["config"]},
        "speedup": speedup["step"], "speedup_by_part": speedup,
        "trl_version": trl.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    own, a = parse_args(argv)
    record = compare(own, a)
    if a.tiny:                        # a smoke run: print, keep the results file for real runs
        print(record)
    else:
        append_result("grpo_vs_trl", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

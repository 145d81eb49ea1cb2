"""One training run from a RunConfig: evaluate, train with rl/, evaluate again. Shared by
`deepretrieval train`, `deepretrieval demo` and bench/rl_gain.py; and `sft_run`, one supervised
run (`deepretrieval sft`, the cold start of deepretrieval/cold_start.py).

    from deepretrieval.training import sft_run, train_run
    result = train_run(cfg, "runs/scifact")          # also under torchrun: every rank calls it
    result.before, result.after                     # evaluation rows (deepretrieval.evaluation)
    sft_run(cfg, "traces.jsonl", "runs/sft")        # {"export": "runs/sft/export", "loss_first": ...}

The run directory receives run_config.json (the resolved config), eval.jsonl (one row per variant
and evaluation, with its step), and what rl/ writes: config.json (the trainer's view), metrics.jsonl,
rollouts.jsonl, curves.png, checkpoints/, export/ (HF format, tokenizer included).

Evaluations run on rank 0 on `run.eval_split` (its first `run.eval_limit` examples when > 0): before
training (skipped on resume: eval.jsonl has it), every `run.eval_every` steps (one process only:
under FSDP the policy is sharded), and after training on the exported policy. On resume,
eval.jsonl keeps the evaluations up to the checkpoint's step and the resumed run redoes the later
ones, so each step's evaluation is there once, as after an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from deepretrieval.evaluation import RewriteSettings, encode_prompts, evaluate_variants
from deepretrieval.policy import CHECKPOINTS, EXPORT, RUN_CONFIG, load_policy, save_tokenizer
from deepretrieval.run_config import RunConfig, write_resolved
from deepretrieval.model.registry import resolve_device
from deepretrieval.rl.lora import merged_copy
from deepretrieval.rl.checkpoint import check_run_dir, checkpoint_step, latest_checkpoint
from deepretrieval.rl.run_logging import METRICS, read_jsonl, trim_jsonl
from deepretrieval.rl.trackers import check_available

EVAL_LOG = "eval.jsonl"
log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    before: list[dict] = field(default_factory=list)     # rank 0 only; [] elsewhere
    after: list[dict] = field(default_factory=list)
    last_metrics: dict = field(default_factory=dict)
    train_prompts: int = 0
    steps: int = 0                                       # RL steps done (the time limit may stop early)
    metric: str = ""                                     # the task's headline evaluation metric


def rewrite_settings(cfg: RunConfig) -> RewriteSettings:
    return RewriteSettings(max_new_tokens=cfg.run.eval_max_new_tokens, greedy=cfg.run.eval_greedy,
                           temperature=cfg.rl.sampling.temperature, batch_size=cfg.run.eval_batch_size,
                           max_prompt_tokens=cfg.model.max_prompt_tokens, seed=cfg.rl.seed)


def log_eval(run_dir: Path, step: int, rows: list[dict]) -> None:
    """Appends one evaluation, in one write; it replaces rows of the same step (the final
    evaluation is redone when a finished run is resumed)."""
    trim_jsonl(run_dir / EVAL_LOG, lambda r: r["step"] != step)
    with (run_dir / EVAL_LOG).open("a") as f:
        f.write("".join(json.dumps({"step": step, **row}) + "\n" for row in rows))


def trim_evaluations_for_resume(run_dir: Path) -> None:
    """Drops eval.jsonl rows newer than the checkpoint the run resumes from (the resumed run
    evaluates those steps again) and an unfinished last line."""
    latest = latest_checkpoint(run_dir / CHECKPOINTS)
    if latest is not None:
        step = checkpoint_step(latest)
        if trim_jsonl(run_dir / EVAL_LOG, lambda r: r["step"] <= step):
            log.info("%s: dropped the evaluations after step %d, the checkpoint resumed from",
                     run_dir / EVAL_LOG, step)


def evaluations(run_dir: Path) -> dict[int, list[dict]]:
    """eval.jsonl grouped by step."""
    out: dict[int, list[dict]] = {}
    for row in read_jsonl(run_dir / EVAL_LOG):
        out.setdefault(row["step"], []).append(row)
    return out


def build_eval_task(cfg: RunConfig):
    from deepretrieval.tasks.registry import build_task
    try:
        task = build_task(cfg.task)
        task.split_examples(cfg.run.eval_split)     # a missing eval split: one line, not a traceback
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"cannot build the task: {exc}") from exc
    if cfg.run.eval_limit:
        task.limit(cfg.run.eval_limit, splits=[cfg.run.eval_split])
    return task


def local_device(cfg: RunConfig):
    """model.device, on CUDA the GPU of this torchrun process (LOCAL_RANK)."""
    device = resolve_device(cfg.model.device)
    if device.type == "cuda":
        device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return device


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether run_dir holds a checkpoint to resume from (of `train_run` or `sft_run`)."""
    return latest_checkpoint(Path(run_dir) / CHECKPOINTS) is not None


def train_run(cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False) -> RunResult:
    from deepretrieval.rl.trainer import train
    run_dir = Path(run_dir or cfg.run.out_dir)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    main = rank == 0
    if cfg.run.eval_every and world > 1:
        raise SystemExit("run.eval_every > 0 needs one process (the policy is sharded under "
                         "torchrun); set run.eval_every=0")
    try:
        check_available(cfg.rl.tensorboard, cfg.rl.wandb_project)
    except ImportError as exc:
        raise SystemExit(f"rl.{exc}") from exc
    check_run_dir(run_dir, run_dir / CHECKPOINTS, resume)     # before eval.jsonl is touched
    device = local_device(cfg)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / EVAL_LOG).unlink(missing_ok=True)
        else:
            trim_evaluations_for_resume(run_dir)
        write_resolved(cfg, run_dir, RUN_CONFIG)
    task = build_eval_task(cfg)
    model, tokenizer = load_policy(cfg.model.name, device, cfg.model.chat_template)
    train_prompts = task.prompts("train")
    encode_prompts(train_prompts, tokenizer, cfg.model.max_prompt_tokens)
    settings = rewrite_settings(cfg)
    split = cfg.run.eval_split
    result = RunResult(run_dir, train_prompts=len(train_prompts), metric=task.headline)
    if main and not resume:
        result.before = evaluate_variants(task, split, model, tokenizer, settings, desc="eval step 0")
        log_eval(run_dir, 0, result.before)

    def on_step_end(step: int, _metrics: dict) -> None:
        if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.rl.total_steps:
            # a LoRA policy is evaluated merged: the fast decoder reads weights, not adapters
            policy = merged_copy(model) if cfg.rl.lora.enabled else model
            log_eval(run_dir, step, evaluate_variants(task, split, policy, tokenizer, settings,
                                                      desc=f"eval step {step}"))

    model.requires_grad_(True)          # load_model hands out frozen models; this one is trained
    result.last_metrics = train(cfg.rl, model, tokenizer, task, run_dir, resume=resume,
                                device=device.type, on_step_end=on_step_end)
    if main:
        save_tokenizer(tokenizer, run_dir / EXPORT)
        trained, tok = load_policy(run_dir / EXPORT, device)
        result.steps = read_jsonl(run_dir / METRICS)[-1]["step"]
        result.after = evaluate_variants(task, split, trained, tok, settings,
                                         desc=f"eval step {result.steps}")
        log_eval(run_dir, result.steps, result.after)
        if resume:
            result.before = evaluations(run_dir).get(0, [])
    task.close()
    return result



def sft_run(cfg: RunConfig, traces_file: str | Path, run_dir: str | Path | None = None,
            resume: bool = False) -> dict:
    """Supervised fine-tuning of cfg.model on a JSONL file of chat traces with cfg.sft (rl/sft.py),
    into run_dir (default run.out_dir): run_config.json, metrics.jsonl, checkpoints/, export/.
    Returns a summary: run_dir, export, traces, steps, loss_first, loss_last (rank 0)."""
    from deepretrieval.rl.checkpoint import CheckpointError
    from deepretrieval.rl.sft import load_traces, sft
    run_dir = Path(run_dir or cfg.run.out_dir)
    try:
        check_available(cfg.sft.tensorboard, cfg.sft.wandb_project)
    except ImportError as exc:
        raise SystemExit(f"sft.{exc}") from exc
    device = local_device(cfg)
    model, tokenizer = load_policy(cfg.model.name, device, cfg.model.chat_template)
    try:
        traces = load_traces(traces_file, tokenizer, cfg.sft.max_tokens)
    except ValueError as exc:
        raise SystemExit(f"cannot read the traces: {exc}") from exc
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        write_resolved(cfg, run_dir, RUN_CONFIG)
    model.requires_grad_(True)          # load_model hands out frozen models; this one is trained
    try:
        sft(cfg.sft, model, tokenizer, traces, run_dir, resume=resume, device=device.type)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from exc
    summary = {"run_dir": str(run_dir), "export": str(run_dir / EXPORT), "traces": len(traces)}
    if main:
        save_tokenizer(tokenizer, run_dir / EXPORT)
        rows = read_jsonl(run_dir / METRICS)
        summary.update(steps=rows[-1]["step"], loss_first=rows[0]["loss"], loss_last=rows[-1]["loss"])
    return summary

"""Multi-GPU GRPO under torchrun: 1-vs-N loss equality, FSDP2 memory per GPU, throughput scaling.

    bash bench/multi_gpu.sh OUT_DIR              # every case that fits the GPUs, then the report
    bash bench/multi_gpu.sh OUT_DIR --tiny       # the same logic on CPU (gloo, toy shapes)

    torchrun --standalone --nproc_per_node=N -m bench.multi_gpu run --preset equality --work DIR
    python -m bench.multi_gpu report --work DIR --md OUT_DIR/multi_gpu.md

`run` does `--steps` GRPO steps of one preset on N processes (one GPU each; gloo on CPU with
--tiny) and rank 0 writes DIR/<preset>_n<N>.json (per-step curves, rollout hashes, times, memory)
and appends a line to bench/results/multi_gpu.jsonl. `report` reads every such file and prints
(and writes as markdown) the comparisons:

1. Loss equality (preset `equality`, Qwen2.5-0.5B shapes): random bf16 weights from seed 0, the
   same on every rank (a checksum is compared), the same global batch for every N, and rollouts
   made independent of N by a fixed `rollout_chunk_prompts` (each sampler call's seed comes from
   (seed, step, first global prompt position); groups never cross ranks). Generation is 128 new
   tokens instead of the paper's 512 to fit the time budget. The reward is a deterministic function
   of the tokens (share of ids ending in 7), so no task data is needed; a set of ~V*ln2/128
   "stop" ids makes about half of the completions end early, so lengths vary and the token-level
   GRPO loss is not identically zero (with equal lengths it is -mean(advantage) = 0 at ratio 1).
   Two optimiser steps per RL step (mini-batch = half the prompts), so later mini-batches train
   at ratio != 1. Checked: loss (policy + kl_coef * KL term), grad norm, reward, KL per step, with
   |a - b| <= rtol * max(|a|, |b|) + atol. bf16 tolerance: rtol 2e-2, atol 1e-3 (loss, reward),
   1e-4 (KL). Why: forward/backward run under bf16 autocast (unit roundoff 2^-8 = 3.9e-3); N
   processes sum gradients in another order (per-rank accumulation, then reduce-scatter), so the
   fp32 masters differ in their last bits after step 1 and their bf16 casts by one bf16 ulp in a
   few elements; later forwards differ at bf16 rounding level, which moves these means by ~1e-3
   relative at most. A real bug (a missing factor N in the loss, a group split across ranks, a
   wrong global token count) is >= 50% off. The GRPO loss sits near 0 (advantages have zero mean
   per group), hence the absolute floor. fp32 on CPU (--tiny): rtol 1e-4, atol 1e-6. The share of
   bit-identical rollouts per step is reported too (step 1 must be 100%).
2. Memory: torch.cuda.max_memory_allocated per GPU, the largest over ranks, for every run; and the
   exact bytes of sharded model state on each GPU (fp32 parameters + AdamW m and v; gradients add
   another 4 B/param/N at the peak). The policy's rollout copy (bf16, unsharded, for the sampler)
   and the frozen reference (bf16, sharded) are listed apart. Preset `3b`: a full-parameter GRPO
   step at Qwen2.5-3B shapes (3.09 B params), micro-batch 4; the driver retries it with gradient
   checkpointing if it fails.
3. Throughput: generated tokens / max over ranks of generation time, and train tokens (prompt +
   response, every sequence, per epoch) / max over ranks of train time (old/reference log-prob
   forwards + update), mean over the steps after the first; scaling efficiency
   = throughput_N / (N * throughput_1), same global batch (strong scaling). Both presets are
   measured: `equality` (128 new tokens, sampler calls of a fixed chunk of prompts) and
   `throughput` (512 new tokens, each rank's whole shard in one sampler call, as production runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import torch

from bench.grpo_step import QWEN25_05B, TINY, NumberTokenizer, RandomPromptTask, random_model
from bench.results_log import append_result, device_name
from deepretrieval.rl.config import OptimConfig, RLConfig, SamplingConfig
from deepretrieval.rl.distributed import all_gather_objects, finish
from deepretrieval.rl.trainer import Trainer

QWEN25_3B = dataclasses.replace(QWEN25_05B, hidden_size=2048, intermediate_size=11008,
                                num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128)
MODELS = {"0.5b": ("Qwen2.5-0.5B shapes", QWEN25_05B), "3b": ("Qwen2.5-3B shapes", QWEN25_3B),
          "tiny": ("tiny", TINY),
          "tiny-3l": ("tiny, 3 layers", dataclasses.replace(TINY, num_layers=3))}
KL_COEF = 0.001
GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    prompts: int                 # per RL step, all ranks together
    group_size: int
    mini_batch_prompts: int
    micro_batch: int             # sequences per forward/backward on one rank
    prompt_len: int
    new_tokens: int
    chunk_prompts: int | None    # prompts per sampler call (fixed: rollouts independent of N)
    steps: int
    lr: float
    gradient_checkpointing: bool = False


PRESETS = {
    "equality": Case("0.5b", 32, 8, 16, 16, 128, 128, 8, 4, 1e-5),
    "throughput": Case("0.5b", 64, 8, 16, 8, 256, 512, None, 3, 1e-6),
    "3b": Case("3b", 8, 4, 8, 4, 128, 128, None, 2, 1e-6),
}
TINY_PRESETS = {
    "equality": Case("tiny", 8, 4, 4, 4, 16, 16, 2, 3, 1e-3),
    "throughput": Case("tiny", 8, 4, 4, 4, 16, 32, None, 3, 1e-3),
    "3b": Case("tiny-3l", 4, 4, 4, 2, 16, 16, None, 2, 1e-3, gradient_checkpointing=True),
}
# (metric, atol) checked for equality; rtol comes from the precision
CHECKED = {"bf16": (2e-2, {"loss": 1e-3, "grad_norm": 0.0, "reward/mean": 1e-3, "kl": 1e-4}),
           "fp32": (1e-4, {"loss": 1e-6, "grad_norm": 0.0, "reward/mean": 1e-6, "kl": 1e-6})}
CURVE_KEYS = ("loss", "loss/policy", "loss/kl", "kl", "grad_norm", "reward/mean", "entropy",
              "response_length/mean", "stop_fraction", "clip_frac", "logprob_diff/max")


class StopTokenizer(NumberTokenizer):
    """NumberTokenizer with stop ids 1..n_stop, so that random weights end some completions."""

    def __init__(self, n_stop: int):
        self.stop_token_ids = list(range(1, n_stop + 1))


def stop_count(vocab: int, new_tokens: int) -> int:
    """Stop ids such that a uniform sampler stops within `new_tokens` about half the time."""
    return max(1, round(vocab * math.log(2) / new_tokens))


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t = t.to_local() if hasattr(t, "to_local") else t
            total += t.numel() * t.element_size()
    return total


def memory_breakdown(trainer: Trainer) -> dict[str, float]:
    """Bytes on this rank (GiB): sharded fp32 params, AdamW state, rollout copy, reference."""
    opt_state = [v for st in trainer.actor_opt.state.values() for v in st.values()]
    rollout = trainer.rollout_lm is not trainer.actor.lm
    return {
        "params_gib": _local_bytes(trainer.actor.parameters()) / GIB,
        "optim_gib": _local_bytes(opt_state) / GIB,
        "rollout_copy_gib": _local_bytes(trainer.rollout_lm.parameters()) / GIB if rollout else 0.0,
        "reference_gib": (_local_bytes(trainer.reference.parameters()) / GIB
                          if trainer.reference is not None else 0.0),
    }


def resolve_case(a: argparse.Namespace) -> Case:
    """The preset with the command line's overrides."""
    case = (TINY_PRESETS if a.tiny else PRESETS)[a.preset]
    overrides = {"steps": a.steps, "chunk_prompts": a.chunk_prompts, "new_tokens": a.new_tokens,
                 "micro_batch": a.micro_batch}
    case = dataclasses.replace(case, **{k: v for k, v in overrides.items() if v is not None})
    if a.gradient_checkpointing:
        case = dataclasses.replace(case, gradient_checkpointing=True)
    if a.no_chunk:
        case = dataclasses.replace(case, chunk_prompts=None)
    return case


def rl_config(case: Case, precision: str) -> RLConfig:
    return RLConfig(algorithm="grpo", seed=0, total_steps=case.steps,
                    prompts_per_step=case.prompts, group_size=case.group_size,
                    mini_batch_prompts=case.mini_batch_prompts, micro_batch_size=case.micro_batch,
                    rollout_chunk_prompts=case.chunk_prompts,
                    sampling=SamplingConfig(max_new_tokens=case.new_tokens, temperature=1.0),
                    kl_coef=KL_COEF, kl_estimator="k3", actor_optim=OptimConfig(lr=case.lr),
                    precision=precision, gradient_checkpointing=case.gradient_checkpointing,
                    reward_workers=4, checkpoint_every=10 ** 9)


def measure_step(trainer: Trainer, step: int) -> dict:
    """One RL step; throughput from the slowest rank's times; every rollout's hash in global
    order (position, then order within the group), to compare runs sample by sample."""
    m = trainer.train_step()
    local = {"gen": m["time/generate"], "train": m["time/train"],
             "samples": [(s.position, len(s.prompt_ids), len(s.response_ids),
                          hashlib.blake2b(repr(s.response_ids).encode(), digest_size=6).hexdigest())
                         for s in trainer._last_samples]}
    ranks = all_gather_objects(local)
    samples = sorted((s for r in ranks for s in r["samples"]), key=lambda s: s[0])   # stable
    gen_tokens = sum(s[2] for s in samples)
    train_tokens = sum(s[1] + s[2] for s in samples) * trainer.cfg.epochs_per_step
    t_gen, t_train = max(r["gen"] for r in ranks), max(r["train"] for r in ranks)
    return {"step": step, "loss": m["loss/policy"] + KL_COEF * m.get("loss/kl", 0.0),
            **{k: m[k] for k in CURVE_KEYS[1:] if k in m},
            "gen_tokens": gen_tokens, "train_tokens": train_tokens,
            "time_generate_s": t_gen, "time_train_s": t_train, "time_step_s": m["time/step"],
            "gen_tokens_per_s": gen_tokens / t_gen, "train_tokens_per_s": train_tokens / t_train,
            "sample_hashes": [s[3] for s in samples]}


def decode_path(lm: torch.nn.Module) -> str:
    """The sampler path `generate` takes for the rollout model (it sets the generation speed)."""
    try:
        from deepretrieval.model import fast_decode
        fast = lm.device.type == "cuda" and fast_decode.unsupported_reason(lm) is None
    except (ImportError, AttributeError):
        fast = False
    return "fast (Triton kernels, CUDA graph)" if fast else "eager"


def run(a: argparse.Namespace) -> int:
    case = resolve_case(a)
    cuda = not a.tiny
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: run the GPU presets on a GPU machine, or add --tiny for CPU")
    model_name, mcfg = MODELS[case.model]
    precision = a.precision if a.precision != "auto" else ("bf16" if cuda else "fp32")
    cfg = rl_config(case, precision)
    task = RandomPromptTask(case.prompts * case.steps, case.prompt_len, mcfg.vocab_size)
    tok = StopTokenizer(stop_count(mcfg.vocab_size, case.new_tokens))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    model = random_model(mcfg, str(dev))
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():   # identical weights on every rank and in every run
        checksum = float(sum(p.float().sum(dtype=torch.float64) for p in model.parameters()))
    work = Path(a.work)
    trainer = Trainer(cfg, model, tok, task, work / f"trainer_{a.preset}_n{world}", device=dev.type)
    info = trainer.dist
    checksums = all_gather_objects(checksum)
    if len(set(checksums)) != 1:
        raise RuntimeError(f"initial weights differ between ranks: checksums {checksums}")
    say = print if info.is_main else (lambda *_, **__: None)
    say(f"[multi_gpu] preset {a.preset}: {model_name} ({n_params / 1e6:.2f} M params), "
        f"N={world}, {dev.type} {precision}, {case}", flush=True)
    if cuda:
        torch.cuda.synchronize()
        alloc_init = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    steps, status, error = [], "ok", None
    try:
        for i in range(case.steps):
            steps.append(measure_step(trainer, i + 1))
            say(f"[multi_gpu] step {i + 1}: " + ", ".join(
                f"{k}={steps[-1][k]:.6g}" for k in (
                    "loss", "grad_norm", "reward/mean", "kl", "response_length/mean",
                    "time_generate_s", "time_train_s", "time_step_s")), flush=True)
    except torch.cuda.OutOfMemoryError as exc:   # recorded; a non-zero exit (the driver retries)
        status, error = "oom", str(exc).splitlines()[0]
        print(f"[multi_gpu] rank {info.rank}: CUDA out of memory: {error}", flush=True)
    finally:
        trainer.pool.close()
    mem = memory_breakdown(trainer)
    if cuda:
        mem.update(alloc_after_init_gib=alloc_init / GIB,
                   alloc_end_gib=torch.cuda.memory_allocated() / GIB,
                   peak_allocated_gib=torch.cuda.max_memory_allocated() / GIB,
                   peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
                   gpu_total_gib=torch.cuda.get_device_properties(dev).total_memory / GIB)
    mems = all_gather_objects(mem) if status == "ok" else [mem]
    memory = {k: max(m[k] for m in mems) for k in mem}     # the fullest GPU
    measured = steps[1:] or steps           # the first step carries the warm-up

    def mean(key: str) -> float | None:
        return sum(r[key] for r in measured) / len(measured) if measured else None

    record = {
        "preset": a.preset, "tiny": a.tiny, "status": status, "error": error,
        "model": model_name, "params": n_params, "model_config": dataclasses.asdict(mcfg),
        "world_size": world, "device_name": device_name(), "precision": precision,
        "case": dataclasses.asdict(case), "stop_ids": len(tok.stop_token_ids),
        "init_checksum": checksum, "decode_path": decode_path(trainer.rollout_lm),
        "memory": memory,
        "gen_tokens_per_s": mean("gen_tokens_per_s"),
        "train_tokens_per_s": mean("train_tokens_per_s"),
        "time_generate_s": mean("time_generate_s"), "time_train_s": mean("time_train_s"),
        "time_step_s": mean("time_step_s"), "measured_steps": [r["step"] for r in measured],
        "steps": steps,
    }
    if info.is_main:
        work.mkdir(parents=True, exist_ok=True)
        (work / f"{a.preset}_n{world}.json").write_text(json.dumps(record, indent=1))
        say("[multi_gpu] memory per GPU (GiB, max over ranks): "
            + ", ".join(f"{k}={v:.3f}" for k, v in memory.items()), flush=True)
        if not a.tiny:      # GPU numbers only; the results line leaves out the rollout hashes
            curves = [{k: v for k, v in r.items() if k != "sample_hashes"} for r in steps]
            append_result("multi_gpu", {**record, "steps": curves})
    if status != "ok":
        sys.stdout.flush()
        os._exit(3)      # a peer may be stuck in a collective: no barrier, torchrun ends it
    finish(info)
    return 0


# ---------------------------------------------------------------------------------- report
def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + atol


def _fmt(x, digits=4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{digits - 1}e}"
    return str(x)


def _table(header: list[str], rows: list[list], digits: int = 4) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_fmt(c, digits) for c in r) + " |" for r in rows]


def equality_section(base: dict, other: dict) -> tuple[list[str], dict]:
    n = other["world_size"]
    rtol, atols = CHECKED[base["precision"]]
    lines = [f"### Loss equality: N=1 vs N={n} ({base['model']}, {base['precision']}, "
             f"{base['case']['steps']} steps, {base['case']['prompts']} prompts x "
             f"{base['case']['group_size']}, {base['case']['new_tokens']} new tokens)", ""]
    result = {"world_size": n, "model": base["model"], "precision": base["precision"],
              "rtol": rtol, "atol": atols, "checks": {}}
    ok = base["init_checksum"] == other["init_checksum"]
    lines.append(f"- initial weights identical (checksum {base['init_checksum']:.6g}): "
                 f"{'yes' if ok else 'NO'}")
    same = [sum(x == y for x, y in zip(r1["sample_hashes"], r2["sample_hashes"]))
            / max(1, len(r1["sample_hashes"])) for r1, r2 in zip(base["steps"], other["steps"])]
    result["identical_rollouts"] = same
    first_ok = bool(same) and same[0] == 1.0
    lines.append("- bit-identical rollouts per step: " + ", ".join(f"{s:.1%}" for s in same)
                 + f" (step 1 must be 100%: {'PASS' if first_ok else 'FAIL'})")
    ok = ok and first_ok
    checked = [k for k in atols if all(k in r for r in base["steps"] + other["steps"])]
    rows = [[r1["step"], *[x for k in checked for x in (r1[k], r2[k])]]
            for r1, r2 in zip(base["steps"], other["steps"])]
    lines += ["", *_table(["step", *[f"{k} N={m}" for k in checked for m in (1, n)]], rows, 7), ""]
    extra = [k for k in CURVE_KEYS if k not in atols]
    diffs = [[k, max((abs(r1[k] - r2[k]) for r1, r2 in zip(base["steps"], other["steps"])
                      if k in r1 and k in r2), default=None)] for k in extra]
    lines.append("- other curves, max abs diff over the steps: "
                 + ", ".join(f"{k} {_fmt(d)}" for k, d in diffs))
    for k, atol in atols.items():
        pairs = [(r1[k], r2[k]) for r1, r2 in zip(base["steps"], other["steps"])]
        if not pairs:
            continue
        max_abs = max(abs(x - y) for x, y in pairs)
        max_rel = max(abs(x - y) / max(abs(x), abs(y), 1e-30) for x, y in pairs)
        passed = all(_close(x, y, rtol, atol) for x, y in pairs)
        ok = ok and passed
        result["checks"][k] = {"max_abs": max_abs, "max_rel": max_rel, "pass": passed}
        lines.append(f"- {k}: max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e} "
                     f"(tolerance rtol {rtol:g}, atol {atol:g}): {'PASS' if passed else 'FAIL'}")
    if len(base["steps"]) != len(other["steps"]) or not base["steps"]:
        ok = False
        lines.append(f"- step counts differ or are empty: {len(base['steps'])} vs "
                     f"{len(other['steps'])}")
    result["pass"] = ok
    lines += [f"- **verdict: {'PASS' if ok else 'FAIL'}**", ""]
    return lines, result


def report(a: argparse.Namespace) -> int:
    work = Path(a.work)
    runs = [json.loads(p.read_text()) for p in sorted(work.glob("*_n*.json"))]
    notes_file = work / "notes.txt"
    notes = notes_file.read_text().splitlines() if notes_file.exists() else []
    by = {(r["preset"], r["world_size"]): r for r in runs}
    tiny = any(r["tiny"] for r in runs)
    device = runs[0]["device_name"] if runs else device_name()
    what = " (CPU gloo, toy shapes: a logic check)" if tiny else ""
    md = [f"## Multi-GPU GRPO: {device}{what}", ""]
    all_ok = True
    records = []
    # 1. equality
    base = by.get(("equality", 1))
    others = sorted(n for p, n in by if p == "equality" and n > 1)
    if base and others:
        for n in others:
            lines, res = equality_section(base, by[("equality", n)])
            md += lines
            records.append({"kind": "equality", **res})
            all_ok = all_ok and res["pass"]
    else:
        md += ["### Loss equality: not run (needs the `equality` preset at N=1 and N>1)", ""]
    # 2. memory
    rows = []
    order = {"equality": 0, "throughput": 1, "3b": 2}
    for (preset, n), r in sorted(by.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        m = r["memory"]
        ref = by.get((preset, 1), {}).get("memory", {}).get("peak_allocated_gib")
        peak = m.get("peak_allocated_gib")
        rows.append([preset, r["model"], n, r["status"], r["case"]["micro_batch"],
                     r["case"]["gradient_checkpointing"], m["params_gib"] + m["optim_gib"],
                     m["rollout_copy_gib"], m["reference_gib"], peak,
                     m.get("gpu_total_gib"), peak / ref if peak and ref else None,
                     r["time_step_s"]])
    md += ["### Memory per GPU (GiB, the fullest rank)", "",
           "states = sharded fp32 params + AdamW m, v (exact bytes; fp32 grads add as much as the "
           "params at the peak); rollout copy = the sampler's unsharded bf16 policy; reference "
           "sharded bf16.", "",
           *_table(["preset", "model", "N", "status", "micro-batch", "grad ckpt", "states",
                    "rollout copy", "reference", "peak allocated", "GPU total", "peak / peak(N=1)",
                    "step s"], rows), ""]
    # 3. throughput
    for preset in ("equality", "throughput"):
        ns = sorted(n for p, n in by if p == preset and by[(p, n)]["status"] == "ok")
        if not ns:
            continue
        b = by.get((preset, 1)) if 1 in ns else None
        c = by[(preset, ns[0])]["case"]
        rows, scaling = [], []
        for n in ns:
            r = by[(preset, n)]
            eg = r["gen_tokens_per_s"] / (n * b["gen_tokens_per_s"]) if b else None
            et = r["train_tokens_per_s"] / (n * b["train_tokens_per_s"]) if b else None
            calls = c["prompts"] // n // c["chunk_prompts"] if c["chunk_prompts"] else 1
            rows.append([n, calls, r["time_generate_s"], r["gen_tokens_per_s"], eg,
                         r["time_train_s"], r["train_tokens_per_s"], et, r["time_step_s"]])
            scaling.append({"world_size": n, "gen_tokens_per_s": r["gen_tokens_per_s"],
                            "gen_efficiency": eg, "train_tokens_per_s": r["train_tokens_per_s"],
                            "train_efficiency": et, "time_step_s": r["time_step_s"]})
        first = by[(preset, ns[0])]
        md += [f"### Throughput, preset `{preset}` ({c['prompts']} prompts x {c['group_size']}, "
               f"prompt {c['prompt_len']}, {c['new_tokens']} new tokens, sampler chunk "
               f"{c['chunk_prompts'] or 'whole shard'} prompts, {first['decode_path']} decoding; "
               f"same global batch for every N; mean of steps {first['measured_steps']})", "",
               *_table(["N", "sampler calls / rank", "gen s", "generated tok/s",
                        "gen efficiency", "train s", "train tok/s", "train efficiency",
                        "step s"], rows), ""]
        records.append({"kind": "scaling", "preset": preset, "model": b["model"] if b else None,
                        "case": c, "rows": scaling})
    if any(p != "3b" for p, _ in by):
        md += ["Times are the slowest rank's. Decoding runs one token per step for the whole "
               "batch, so where it is bound by kernel launches a sampler call costs about the same "
               "for 64 or 512 rows: generation then scales with the number of calls per rank, not "
               "with the rows per rank.", ""]
    if notes:
        md += ["### Not run / failed", "", *[f"- {n}" for n in notes], ""]
    text = "\n".join(md)
    print(text)
    if a.md:
        Path(a.md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.md).write_text(text + "\n")
    if a.runs_json:
        Path(a.runs_json).write_text(json.dumps({"runs": runs, "summary": records}, indent=1))
    if not tiny:
        for rec in records:
            append_result("multi_gpu", rec)
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one preset on this torchrun group (rank 0 writes the JSON)")
    r.add_argument("--preset", required=True, choices=sorted(PRESETS))
    r.add_argument("--work", required=True, help="folder for <preset>_n<N>.json")
    r.add_argument("--tiny", action="store_true", help="toy shapes on CPU (gloo under torchrun)")
    r.add_argument("--steps", type=int)
    r.add_argument("--chunk-prompts", type=int, help="prompts per sampler call (fixed across N)")
    r.add_argument("--no-chunk", action="store_true", help="each rank's shard in one sampler call")
    r.add_argument("--new-tokens", type=int)
    r.add_argument("--micro-batch", type=int)
    r.add_argument("--gradient-checkpointing", action="store_true")
    r.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 on GPU, fp32 on CPU; fp32 on GPU isolates reduction-order effects")
    c = sub.add_parser("report", help="compare the runs in --work; print and write markdown")
    c.add_argument("--work", required=True)
    c.add_argument("--md", help="write the markdown report here")
    c.add_argument("--runs-json", help="write every run's JSON and the summary into this one file")
    a = p.parse_args(argv)
    return run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    raise SystemExit(main())

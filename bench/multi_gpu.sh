#!/usr/bin/env bash
# Multi-GPU GRPO benchmark (bench/multi_gpu.py): every case the GPUs allow, one after another,
# inside a wall-clock budget, then the report.
#   bash bench/multi_gpu.sh OUT_DIR            # GPUs: N = 1, 2 (4, 8 where present)
#   bash bench/multi_gpu.sh OUT_DIR --tiny     # CPU, gloo, toy shapes: the same logic in ~2 min
# Writes OUT_DIR/multi_gpu.log (every case's output), OUT_DIR/multi_gpu.md (the tables),
# OUT_DIR/multi_gpu_runs.json (every run's raw record); GPU runs also append to
# bench/results/multi_gpu.jsonl. Order = priority: loss equality N=1, N=2 (.. 4, 8), the 3B
# full-parameter step on all GPUs (retried with gradient checkpointing if it fails), then the
# 512-token throughput preset. A case that no longer fits the budget is skipped and listed.
# Environment: MULTI_GPU_BUDGET_S (default 480), MULTI_GPU_WORK (default /tmp/multi_gpu_work).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash bench/multi_gpu.sh OUT_DIR [--tiny]}"
TINY=""
[[ "${2:-}" == "--tiny" ]] && TINY="--tiny"
# NVLink multicast stays off (shared hosts); keep these set for every process started here.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
BUDGET="${MULTI_GPU_BUDGET_S:-480}"
WORK="${MULTI_GPU_WORK:-/tmp/multi_gpu_work}"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
LOG="$OUT/multi_gpu.log"
: > "$LOG"
T0=$SECONDS

say() { echo "[multi_gpu.sh] $*" | tee -a "$LOG"; }
note() { echo "$*" >> "$WORK/notes.txt"; say "$*"; }

# run_case PRESET NPROC MAX_S MIN_S [extra args]: one torchrun, limited to MAX_S and to what is
# left of the budget (25 s kept for the report); skipped when less than MIN_S is left.
run_case() {
    local preset=$1 n=$2 max=$3 min=$4
    shift 4
    local left=$(( BUDGET - (SECONDS - T0) - 25 ))
    if (( left < min )); then
        note "$preset N=$n $*: skipped, ${left}s of the ${BUDGET}s budget left and it needs about ${min}s"
        return 2
    fi
    local limit=$(( left < max ? left : max )) s0=$SECONDS
    say "$(date -u +%T) preset $preset N=$n (limit ${limit}s) $*"
    timeout -k 10 "$limit" python -m torch.distributed.run --standalone --nproc_per_node="$n" \
        -m bench.multi_gpu run --preset "$preset" --work "$WORK" $TINY "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "preset $preset N=$n: exit $rc after $(( SECONDS - s0 ))s"
    if (( rc == 124 || rc == 137 )); then
        note "$preset N=$n $*: timed out after ${limit}s"
    elif (( rc != 0 )); then
        note "$preset N=$n $*: failed with exit $rc (multi_gpu.log has the output)"
    fi
    return "$rc"
}

if [[ -n "$TINY" ]]; then
    NGPU=2           # two gloo processes on CPU
    MINI=4           # mini_batch_prompts of the tiny presets
    SCALE=4          # tiny runs take seconds: scale the time limits down
    export OMP_NUM_THREADS=1     # N=1 and N=2 alike: one thread per process
else
    NGPU=$(python -c 'import torch; print(torch.cuda.device_count())')
    MINI=16
    SCALE=1
    if (( NGPU < 1 )); then
        echo "no CUDA GPU visible: run on a GPU machine, or add --tiny for the CPU check" >&2
        exit 1
    fi
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee -a "$LOG"
fi
NS=()
for n in 1 2 4 8; do (( n <= NGPU )) && NS+=("$n"); done
NMAX=${NS[-1]}
# prompts per sampler call: the same for every N (and for 1- and 2-GPU machines), divides each shard
CHUNK=$(( MINI / (NMAX > 2 ? NMAX : 2) ))
say "GPUs: $NGPU; N = ${NS[*]}; rollout chunk $CHUNK prompts; budget ${BUDGET}s"
if (( NMAX == 1 )); then
    note "only 1 GPU: loss equality N=1 vs N=2, the memory fall with N, scaling efficiency" \
        "and the 3B step on 2 GPUs were not run (N=1 parts only; 3B tried on 1 GPU)"
fi

# 1. loss equality (also memory and throughput at 128 new tokens)
for n in "${NS[@]}"; do
    run_case equality "$n" $(( 150 / SCALE )) $(( 50 / SCALE )) --chunk-prompts "$CHUNK"
done
# 2. Qwen2.5-3B shapes, full-parameter GRPO step on all GPUs
if (( NMAX == 1 )); then
    run_case 3b 1 $(( 200 / SCALE )) $(( 70 / SCALE )) --gradient-checkpointing
elif [[ -z "$TINY" ]]; then
    run_case 3b "$NMAX" $(( 200 / SCALE )) $(( 70 / SCALE ))
    if (( $? == 1 )); then      # failed (out of memory, most likely): not skipped, not timed out
        note "3b N=$NMAX: retrying with gradient checkpointing"
        run_case 3b "$NMAX" $(( 200 / SCALE )) $(( 70 / SCALE )) --gradient-checkpointing
    fi
else
    run_case 3b "$NMAX" $(( 200 / SCALE )) $(( 70 / SCALE ))    # tiny preset: checkpointing on
fi
# 3. throughput at production settings (512 new tokens, one sampler call per rank)
for n in "${NS[@]}"; do
    run_case throughput "$n" $(( 150 / SCALE )) $(( 60 / SCALE ))
done

say "cases done after $(( SECONDS - T0 ))s; report:"
python -m bench.multi_gpu report --work "$WORK" --md "$OUT/multi_gpu.md" \
    --runs-json "$OUT/multi_gpu_runs.json" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "total $(( SECONDS - T0 ))s; report exit $rc (1 = an equality check failed)"
exit "$rc"

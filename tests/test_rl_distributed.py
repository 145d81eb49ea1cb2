"""One process vs two gloo processes (torchrun, FSDP2 fully_shard) on the same global batches:
same losses and same parameters after 3 steps (<= 1e-5), for GRPO, for GRPO with dynamic sampling
(groups regenerated and exchanged between ranks), for GRPO with LoRA (frozen base and adapters
sharded together; the export merged), and for PPO with the two-process run stopped after step 2
and resumed from its checkpoint."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from deepretrieval.model.hf_weights import hf_state_dict
from deepretrieval.rl import toy_task
from deepretrieval.rl.run_logging import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--steps", "3", "--chunk-prompts", "4", "--lr", "1e-3"]


def _torchrun(run_dir, algorithm, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "deepretrieval.rl.toy_task", "--run-dir", str(run_dir),
                           "--algorithm", algorithm, *ARGS, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("algorithm,extra", [("grpo", []), ("ppo", []), ("grpo", ["--dynamic-sampling"]),
                                             ("grpo", ["--lora-rank", "4"])],
                         ids=["grpo", "ppo", "grpo-dynamic-sampling", "grpo-lora"])
def test_one_vs_two_processes(tmp_path, algorithm, extra):
    two = tmp_path / "two"
    if algorithm == "grpo":
        _torchrun(two, algorithm, *extra)
    else:   # PPO also stops after step 2 and resumes under torchrun (sharded state, RNG, cursor)
        _torchrun(two, algorithm, "--steps", "2", "--checkpoint-every", "1")
        _torchrun(two, algorithm, "--resume")
    one = tmp_path / "one"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        toy_task.main(["--run-dir", str(one), "--algorithm", algorithm, *ARGS, *extra])
    finally:
        torch.set_num_threads(n)
    m1, m2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r["step"] for r in m2] == [1, 2, 3]
    keys = ["loss/policy", "kl", "reward/mean", "clip_frac",
            "loss/value" if algorithm == "ppo" else "loss/kl"]
    for a, b in zip(m1, m2):
        for k in keys:
            assert abs(a[k] - b[k]) <= 1e-5, (k, a[k], b[k])
    assert m2[0]["loss/policy"] != 0.0 and m2[-1]["kl"] > 0     # the runs did train
    if "--dynamic-sampling" in extra:   # groups dropped and regenerated, the same ones in both runs
        assert max(r["groups/rounds"] for r in m2) > 1
        for a, b in zip(m1, m2):
            for k in ("groups/zero_variance", "groups/rounds", "reward/generated_mean"):
                assert a[k] == pytest.approx(b[k], abs=1e-12), k
    p1 = load_file(one / "export" / "model.safetensors")
    p2 = load_file(two / "export" / "model.safetensors")
    init = hf_state_dict(toy_task.tiny_model(0))
    assert max((p1[k] - init[k]).abs().max().item() for k in p1) > 1e-4    # parameters moved
    diff = max((p1[k] - p2[k]).abs().max().item() for k in p1)
    assert diff <= 1e-5, diff
    print(f"{algorithm}: max |param 1 proc - param 2 procs| = {diff:.2e}")

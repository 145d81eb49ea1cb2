"""On a CUDA machine (`pytest -m gpu tests/test_rl_gpu.py`): the bf16 path (autocast training,
bf16 rollout copy of the policy) learns the toy task, and sampler / trainer log-probs stay close."""
import pytest
import torch

from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
from deepretrieval.rl.trainer import Trainer


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_bf16_cuda_learns_toy_task(tmp_path, algorithm):
    cfg = toy_config(algorithm, total_steps=15, precision="bf16", gradient_checkpointing=True)
    trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path, device="cuda")
    assert trainer.rollout_lm.dtype == torch.bfloat16 and trainer.actor.lm.dtype == torch.float32
    trainer.fit()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0]["reward/mean"] < 0.15 and min(r["reward/mean"] for r in rows[-3:]) > 0.9
    # bf16 sampling vs bf16-autocast recomputation: close, not equal
    assert max(r["logprob_diff/max"] for r in rows) < 0.1

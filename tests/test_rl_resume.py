"""Exact resume: 6 steps straight == 3 steps, process SIGKILLed, resume, 3 more steps
(identical parameters and metrics, fp32 CPU); a corrupt latest checkpoint is a clear error.

Run as a script (`python tests/test_rl_resume.py RUN_DIR`) this file is the worker that trains
and kills itself with SIGKILL right after step 3's checkpoint.
"""
import os
import signal
import subprocess
import sys
from operator import attrgetter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
KILL_AT = 3


def _trainer(run_dir, steps=6):
    from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
    from deepretrieval.rl.trainer import Trainer
    # PPO: the most state (policy, critic, two optimisers and schedulers); at step 6 the reward
    # is still rising, so any drift after the resume shows in parameters and metrics
    cfg = toy_config("ppo", total_steps=steps, checkpoint_every=1, keep_checkpoints=2)
    return Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), run_dir, device="cpu")


def _strip(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "tokens_per_s"))} for r in rows]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_kill_and_resume_is_exact(tmp_path):
    from deepretrieval.rl.run_logging import read_jsonl
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, __file__, str(killed)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(read_jsonl(killed / "metrics.jsonl")) == KILL_AT
    resumed = _trainer(killed)
    resumed.fit(resume=True)
    assert resumed.step == 6
    for name in ("actor", "algo.critic"):
        a, b = attrgetter(name)(straight).state_dict(), attrgetter(name)(resumed).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    for opt in ("actor_opt", "algo.critic_opt"):
        sa, sb = attrgetter(opt)(straight).state_dict()["state"], attrgetter(opt)(resumed).state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    rows_a = _strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    rows_b = _strip(read_jsonl(killed / "metrics.jsonl"))
    assert rows_a == rows_b and len(rows_b) == 6


def test_resume_from_corrupt_checkpoint_is_a_clear_error(tmp_path):
    from deepretrieval.rl.checkpoint import CheckpointError
    _trainer(tmp_path, steps=2).fit()
    state = tmp_path / "checkpoints" / "step_00000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    expected = r"step_00000002 is unusable.*previous good checkpoint is .*step_00000001"
    with pytest.raises(CheckpointError, match=expected):
        _trainer(tmp_path).fit(resume=True)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        _trainer(tmp_path / "empty").fit(resume=True)
    with pytest.raises(CheckpointError, match="already holds checkpoints of a run"):
        _trainer(tmp_path).fit()


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker = _trainer(sys.argv[1])
    worker.fit(on_step_end=lambda step, m: step == KILL_AT and os.kill(os.getpid(), signal.SIGKILL))

"""End to end on CPU: a tiny randomly initialised Transformer learns the toy reward (emit a
target character) with GRPO and with PPO, from chance (~1/32) to > 0.9 in a bounded number of
steps, under a minute; the reference model never changes; the run writes its outputs."""
import json
import shutil
import time

import pytest
import torch

from deepretrieval.model.hf_weights import load_hf
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
from deepretrieval.rl.trainer import Trainer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("algorithm,critic", [("grpo", "separate"), ("ppo", "separate"),
                                              ("ppo", "shared")])
def test_tiny_model_learns_target_char(tmp_path, algorithm, critic):
    steps = 15
    cfg = toy_config(algorithm, total_steps=steps, critic=critic)
    trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path, device="cpu")
    ref_before = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    actor_before = {k: v.clone() for k, v in trainer.actor.lm.state_dict().items()}
    t0 = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - t0
    rewards = [row["reward/mean"] for row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(rewards) == steps
    assert rewards[0] < 0.15, rewards                     # chance: 1/32 per character
    assert min(rewards[-3:]) > 0.9, rewards
    assert elapsed < 60, elapsed
    for k, v in trainer.reference.state_dict().items():   # frozen reference
        assert torch.equal(v, ref_before[k]), k
    assert not any(p.requires_grad for p in trainer.reference.parameters())
    assert max((trainer.actor.lm.state_dict()[k] - v).abs().max() for k, v in actor_before.items()) > 1e-3
    print(f"{algorithm}/{critic}: rewards {[round(r, 2) for r in rewards]} in {elapsed:.1f}s")


def test_run_outputs_and_export(tmp_path):
    from deepretrieval.rl.trainer import train
    cfg = toy_config("ppo", total_steps=2, checkpoint_every=1)
    policy = tiny_model(0)
    metrics = train(cfg, policy, CharTokenizer(), TargetCharTask(), tmp_path, device="cpu")
    for key in ("reward/mean", "reward/std", "reward/hits", "kl", "entropy", "clip_frac",
                "loss/policy", "loss/value", "response_length/mean", "logprob_diff/max",
                "time/generate", "time/reward", "time/train", "tokens_per_s/generate", "grad_norm"):
        assert key in metrics, key
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["logprob_diff/max"] < 1e-5
    rollouts = read_jsonl(tmp_path / "rollouts.jsonl")
    assert len(rollouts) == 4 and {"completion", "reward", "details", "meta"} <= set(rollouts[0])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rl"]["algorithm"] == "ppo" and config["rl"]["actor_optim"]["lr"] == cfg.actor_optim.lr
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001",
                                                                           "step_00000002"]
    exported = load_hf(tmp_path / "export")
    for k, v in policy.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v), k


def test_gradient_checkpointing_changes_nothing(tmp_path):
    params = []
    for ckpt in (False, True):
        cfg = toy_config("grpo", total_steps=1, gradient_checkpointing=ckpt)
        trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path / str(ckpt),
                          device="cpu")
        trainer.fit()
        params.append(trainer.actor.state_dict())
    for k, v in params[0].items():
        torch.testing.assert_close(params[1][k], v, atol=1e-6, rtol=0)


def test_grpo_first_mini_batch_takes_its_old_logprobs_from_the_update(tmp_path):
    """GRPO skips the policy's no-grad pass over the first mini-batch (its optimiser step runs at
    the step's starting weights): 2 of 4 mini-batches' passes, not 4 of 4, and the same 2 steps
    (losses, statistics, weights) as recomputing them."""
    runs = []
    for own in (True, False):
        cfg = toy_config("grpo", total_steps=2, prompts_per_step=16, mini_batch_prompts=8,
                         micro_batch_size=16)
        trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path / str(own),
                          device="cpu")
        assert trainer.own_first_logprobs
        trainer.own_first_logprobs = own
        no_grad_passes = []
        forward = trainer.actor.forward

        def counting(*args, **kwargs):
            no_grad_passes.append(not torch.is_grad_enabled())
            return forward(*args, **kwargs)
        trainer.actor.forward = counting
        trainer.fit()
        runs.append((read_jsonl(tmp_path / str(own) / "metrics.jsonl"), trainer.actor.state_dict(),
                     sum(no_grad_passes)))
    (own_rows, own_params, own_passes), (rows, params, passes) = runs
    # 128 completions a step in micro-batches of 16: 8 prepare passes, 4 of them in mini-batch 1
    assert (own_passes, passes) == (2 * 4, 2 * 8)
    for a, b in zip(own_rows, rows):
        for k in ("loss/policy", "loss/kl", "kl", "entropy", "logprob_diff/max",
                  "logprob_diff/mean", "clip_frac", "grad_norm"):
            assert abs(a[k] - b[k]) <= 1e-6, (k, a[k], b[k])
    assert own_rows[1]["kl"] > 0 and own_rows[1]["entropy"] > 0
    for k, v in params.items():
        torch.testing.assert_close(own_params[k], v, atol=1e-6, rtol=0)


@pytest.mark.parametrize("algorithm,epochs", [("ppo", 1), ("grpo", 2)])
def test_ppo_and_second_epochs_keep_the_prepare_pass(tmp_path, algorithm, epochs):
    """PPO's advantages read the pass (values, KL in the reward); a second epoch would need the
    first mini-batch's old log-probs kept."""
    trainer = Trainer(toy_config(algorithm, epochs_per_step=epochs), tiny_model(0), CharTokenizer(),
                      TargetCharTask(), tmp_path, device="cpu")
    trainer.pool.close()
    assert not trainer.own_first_logprobs


@pytest.mark.skipif(shutil.which("gcc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compile_blocks_changes_nothing(tmp_path):
    """compile_blocks (inside gradient checkpointing): the same 2 steps as eager."""
    runs = []
    for compiled in (False, True):
        cfg = toy_config("grpo", total_steps=2, gradient_checkpointing=True,
                         compile_blocks=compiled)
        trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(),
                          tmp_path / str(compiled), device="cpu")
        trainer.fit()
        runs.append((read_jsonl(tmp_path / str(compiled) / "metrics.jsonl"),
                     trainer.actor.state_dict()))
    (eager, eager_params), (comp, comp_params) = runs
    for a, b in zip(eager, comp):
        for k in ("loss/policy", "loss/kl", "kl", "entropy", "logprob_diff/max", "grad_norm"):
            assert abs(a[k] - b[k]) <= 1e-5, (k, a[k], b[k])
    assert eager[0]["loss/policy"] != 0.0
    # inductor's fused kernels round differently (~1e-6 in the gradients); Adam divides each
    # gradient by its own scale, so for near-zero gradients that moves a weight by up to a good
    # fraction of lr (1e-2) per step: a broken compiled backward would show as ~lr
    for k, v in eager_params.items():
        torch.testing.assert_close(comp_params[k], v, atol=1e-3, rtol=0)


def test_max_minutes_stops_after_the_step_and_checkpoints(tmp_path):
    cfg = toy_config("grpo", total_steps=50, max_minutes=1e-9)
    trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path, device="cpu")
    trainer.fit()
    assert trainer.step == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]


def test_max_minutes_counts_the_time_before_a_resume(tmp_path, monkeypatch):
    """A run killed after 30 s of a 60 s budget trains 30 s more when resumed, not 60: the
    checkpoint keeps the training time (the clock here advances 10 s at every reading: once as
    the loop starts, then once a step)."""
    from deepretrieval.rl import trainer as trainer_module
    now = [0.0]

    def clock():
        now[0] += 10.0
        return now[0]
    monkeypatch.setattr(trainer_module, "_clock", clock)

    def run(max_minutes: float, resume: bool) -> Trainer:
        cfg = toy_config("grpo", total_steps=50, max_minutes=max_minutes, checkpoint_every=100)
        trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path, device="cpu")
        trainer.fit(resume=resume)
        return trainer

    assert run(0.5, resume=False).step == 3              # 30 s: stopped and checkpointed at step 3
    resumed = run(1.0, resume=True)
    assert resumed.step == 6 and resumed.train_seconds == 60.0

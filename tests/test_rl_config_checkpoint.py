"""rl.config (presets, dict round trip, validation), rl.optim (warmup schedule), rl.checkpoint
(atomic publish, verification, clear errors, the previous good checkpoint kept), rl.data."""
import json

import pytest
import torch

from deepretrieval.rl.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                           save_checkpoint)
from deepretrieval.rl.config import OptimConfig, RLConfig, grpo_default, paper_ppo
from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.optim import build_optimizer, build_scheduler


def test_paper_ppo_settings_are_expressible():
    cfg = paper_ppo()
    assert (cfg.algorithm, cfg.actor_optim.lr, cfg.critic_optim.lr, cfg.kl_coef, cfg.entropy_coef,
            cfg.clip_low, cfg.clip_high, cfg.gamma, cfg.lam, cfg.prompts_per_step,
            cfg.mini_batch_prompts, cfg.group_size, cfg.kl_mode) == \
        ("ppo", 1e-6, 1e-5, 0.001, 0.001, 0.2, 0.2, 1.0, 1.0, 64, 16, 1, "reward")
    assert cfg.num_mini_batches == 4
    assert grpo_default().group_size == 8


def test_config_dict_round_trip_and_errors():
    cfg = paper_ppo(total_steps=7)
    d = json.loads(json.dumps(cfg.to_dict()))          # what config.json holds
    assert RLConfig.from_dict(d) == cfg
    assert RLConfig.from_dict({"compile_blocks": True}).compile_blocks is True
    assert RLConfig().compile_blocks is False
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\] in \[rl\]"):
        RLConfig.from_dict({"lr": 1e-6})
    with pytest.raises(ValueError, match=r"in \[rl.actor_optim\]"):
        RLConfig.from_dict({"actor_optim": {"learning_rate": 1}})
    with pytest.raises(ValueError, match="multiple of mini_batch_prompts"):
        RLConfig(prompts_per_step=10, mini_batch_prompts=4)
    with pytest.raises(ValueError, match="GRPO needs group_size >= 2"):
        RLConfig(algorithm="grpo", group_size=1)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        RLConfig(mini_batch_prompts=6, prompts_per_step=12).check_world(4)


def test_warmup_then_constant_and_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(lr=1.0, warmup_steps=4))
    sched = build_scheduler(opt, OptimConfig(lr=1.0, warmup_steps=4), total_steps=10)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    cos = OptimConfig(lr=2.0, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
    sched = build_scheduler(build_optimizer([p], cos), cos, total_steps=4)
    assert sched.lr_lambdas[0](0) == pytest.approx(1.0)
    assert sched.lr_lambdas[0](2) == pytest.approx(0.55)
    assert sched.lr_lambdas[0](4) == pytest.approx(0.1)


def _payload(step):
    return {"step": step, "w": torch.full((3,), float(step))}


def test_checkpoint_save_load_prune(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _payload(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    loaded = load_checkpoint(latest_checkpoint(tmp_path))
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.full((3,), 3.0))


def test_partial_checkpoint_is_ignored_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, 1, _payload(1))
    partial = tmp_path / ".step_00000002.tmp-999"          # a writer killed mid-save
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    save_checkpoint(tmp_path, 2, _payload(2))
    assert not partial.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_corrupt_checkpoint_gives_clear_error_and_keeps_previous(tmp_path, damage):
    save_checkpoint(tmp_path, 1, _payload(1))
    bad = save_checkpoint(tmp_path, 2, _payload(2))
    state = bad / "state.pt"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    elif damage == "manifest":
        (bad / "manifest.json").write_text("{not json")
    else:
        state.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert "step_00000002 is unusable" in msg and "previous good checkpoint is" in msg
    assert "step_00000001" in msg
    assert load_checkpoint(tmp_path / "step_00000001")["step"] == 1


def test_prompt_stream_cursor_resumes_exactly():
    a = PromptStream(10, seed=3)
    first = a.next(7) + a.next(7)                          # crosses into epoch 1
    assert sorted(first[:10]) == list(range(10)) and a.epoch == 1
    b = PromptStream(10, seed=3)
    b.next(7)
    c = PromptStream(10, seed=3)
    c.load_state_dict(b.state_dict())
    assert c.next(7) == first[7:]
    with pytest.raises(ValueError, match="same data"):
        PromptStream(11, seed=3).load_state_dict(b.state_dict())

"""bench.grpo_vs_trl: the TRL config it builds asks TRL for ours' step (the quantities that must
be equal), and the --tiny run times one step of each side on CPU and reports both."""
from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="bench.grpo_vs_trl compares against TRL: pip install trl "
                                  "(deepretrieval[test] has it)")

from bench import grpo_step, grpo_vs_trl


def test_trl_config_matches_ours_at_the_bench_shapes(tmp_path):
    own, a = grpo_vs_trl.parse_args([])                  # the GPU defaults, built on CPU
    cfg = grpo_step.rl_config(a)
    args = grpo_vs_trl.trl_config(cfg, str(tmp_path), own.steps, a.micro_batch, cuda=False)
    completions = cfg.prompts_per_step * cfg.group_size
    assert (completions, cfg.group_size) == (64 * 8, 8)
    assert args.generation_batch_size == completions                 # one generation per RL step
    assert args.num_generations == cfg.group_size
    # optimiser steps: ours makes prompts_per_step / mini_batch_prompts of them, each on a mini-batch
    per_optimizer_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    assert per_optimizer_step == cfg.mini_batch_prompts * cfg.group_size == 128
    assert args.steps_per_generation // args.gradient_accumulation_steps == cfg.num_mini_batches
    assert args.max_steps == (1 + own.steps) * cfg.num_mini_batches
    assert args.num_iterations == cfg.epochs_per_step == 1
    assert args.max_completion_length == cfg.sampling.max_new_tokens == 512
    assert (args.temperature, args.top_p, args.top_k) == (1.0, 1.0, 0)
    assert (args.beta, args.epsilon, args.epsilon_high) == (cfg.kl_coef, cfg.clip_low, cfg.clip_high)
    assert (args.beta, args.epsilon) == (0.001, 0.2)
    assert (args.loss_type, args.scale_rewards) == ("dapo", "group")
    assert not args.use_vllm and not args.gradient_checkpointing and not args.mask_truncated_completions
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm) == (
        cfg.actor_optim.lr, cfg.actor_optim.weight_decay, cfg.actor_optim.grad_clip)
    # prompts: TRL's tokenizer reads ours' prompt texts back as exactly prompt_len ids
    tok = grpo_vs_trl.number_tokenizer(grpo_step.QWEN25_05B.vocab_size)
    prompts = grpo_step.RandomPromptTask(2, a.prompt_len, grpo_step.QWEN25_05B.vocab_size).prompts()
    ids = tok(text=[p.text for p in prompts])["input_ids"]
    assert [len(x) for x in ids] == [256, 256] and ids[0] == [int(t) for t in prompts[0].text.split()]
    assert tok.eos_token_id == tok.pad_token_id == grpo_step.QWEN25_05B.vocab_size   # never sampled


def test_tiny_run_times_both_sides(capsys):
    own, a = grpo_vs_trl.parse_args(["--tiny"])
    record = grpo_vs_trl.compare(own, a)
    out = capsys.readouterr().out
    assert "TRL / ours" in out and "TRL step 1 (measured)" in out
    assert record["steps"] == 1 and record["model"] == "tiny"
    for side in ("ours", "trl"):
        assert all(record[side][f"{k}_s"] > 0 for k in grpo_vs_trl.PARTS), record[side]
        assert record[side]["response_length"] == a.new_tokens          # nothing stops early
    assert record["speedup"] == pytest.approx(record["trl"]["step_s"] / record["ours"]["step_s"])
    trl_cfg = record["trl"]["config"]
    assert trl_cfg["generation_batch_size"] == a.prompts * a.group_size
    assert trl_cfg["num_generations"] == a.group_size
    assert trl_cfg["max_completion_length"] == a.new_tokens
    assert (trl_cfg["per_device_train_batch_size"] * trl_cfg["gradient_accumulation_steps"]
            == a.mini_batch_prompts * a.group_size)
    assert (trl_cfg["beta"], trl_cfg["epsilon"]) == (record["kl_coef"], record["clip"][0])
    assert record["trl_version"] and record["transformers_version"] and record["torch_version"]

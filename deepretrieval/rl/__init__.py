"""Training LLM policies: GRPO and PPO under torch.distributed, and SFT as their cold start.

    from deepretrieval.rl.trainer import train            # the RL entry point (see its docstring)
    from deepretrieval.rl.sft import sft                  # supervised fine-tuning on chat traces
    from deepretrieval.rl.config import RLConfig, SFTConfig, paper_ppo, grpo_default
    from deepretrieval.rl.interfaces import Prompt, RewardResult, Task

Files, one concept each: interfaces (task contract), config, optim (AdamW + schedule + step),
advantages (GRPO, GAE), losses (clipped policy, KL k1/k3, value), algorithms (what GRPO and PPO
do differently in a step), dynamic_sampling (DAPO's group filter), response_head (the LM head
fused with log-probs and entropy, in chunks), models (response-token view of a causal LM, value
head, export), lora (adapters, frozen base, merge), rollout (sampler -> samples -> padded
batches), reward_pool (parallel cached rewards), data (prompt stream + cursor), distributed
(process group, FSDP2, collectives), checkpoint (atomic, verified), train_state (what a
checkpoint holds), run_logging (config, JSONL, PNG, tqdm), trackers (TensorBoard, W&B), trainer
(the RL loop), sft (the SFT loop), toy_task (a synthetic task for tests and smoke runs).
rl/ knows nothing about retrieval or SQL: a task hands it prompts and a reward function.
"""

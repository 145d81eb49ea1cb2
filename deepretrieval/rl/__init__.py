"""Reinforcement learning for LLM policies: GRPO and PPO under torch.distributed.

    from deepretrieval.rl.trainer import train            # the entry point (see its docstring)
    from deepretrieval.rl.config import RLConfig, paper_ppo, grpo_default
    from deepretrieval.rl.interfaces import Prompt, RewardResult, Task

Files, one concept each: interfaces (task contract), config, optim (AdamW + schedule),
advantages (GRPO, GAE), losses (clipped policy, KL k1/k3, value), response_head (the LM head
fused with log-probs and entropy, in chunks), models (response-token view of a causal LM, value
head), rollout (sampler -> samples -> padded batches), reward_pool (parallel cached rewards), data
(prompt stream + cursor), distributed (process group, FSDP2, collectives), checkpoint (atomic,
verified), run_logging (config, JSONL, PNG, tqdm), trainer (the loop), toy_task (a synthetic task
for tests and smoke runs).
rl/ knows nothing about retrieval or SQL: a task hands it prompts and a reward function.
"""

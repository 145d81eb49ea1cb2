"""Dynamic sampling (DAPO): train only on groups whose rewards differ.

    flags = [(position, zero_variance(rewards_of_group)) for each generated group]   # all ranks
    chosen, fillers = select_groups(flags, needed=cfg.prompts_per_step)

A GRPO group whose completions all got the same reward has advantage 0 everywhere: it adds
nothing to the policy gradient and dilutes the step (only the KL / entropy terms see it). With
`rl.dynamic_sampling = true` the trainer drops such groups and generates another round of
`prompts_per_step` prompts, up to `rl.dynamic_sampling_extra_rounds` extra rounds, until
`prompts_per_step` groups with unequal rewards exist; it trains on the first of them in
generation order. If the cap is reached first, the earliest zero-variance groups fill the rest of
the batch, so every step keeps its shape (and its number of optimiser steps).

A group's position counts across rounds (round r's prompt p is r * prompts_per_step + p): it
seeds the group's sampling (rl/rollout.py), so round 0 is exactly the step without dynamic
sampling, and the choice depends on nothing but the rewards (not on the number of ranks).
"""
from __future__ import annotations

from typing import Sequence


def zero_variance(rewards: Sequence[float]) -> bool:
    """All rewards of a group equal (exactly: the advantages are then exactly 0)."""
    return max(rewards) == min(rewards)


def select_groups(flags: Sequence[tuple[int, bool]], needed: int) -> tuple[list[int], int]:
    """flags: (position, zero variance) of every generated group, any order.

    Returns the positions of the `needed` groups to train on, in training order: the groups with
    unequal rewards by position, then, when there are too few, the zero-variance groups by
    position; and how many of those fillers were used."""
    if len(flags) < needed:
        raise ValueError(f"{len(flags)} groups generated, {needed} needed")
    ordered = sorted(flags)
    varied = [pos for pos, flat in ordered if not flat]
    flat = [pos for pos, is_flat in ordered if is_flat]
    fillers = max(0, needed - len(varied))
    return varied[:needed] + flat[:fillers], fillers

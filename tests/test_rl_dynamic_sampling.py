"""Dynamic sampling (DAPO) on a worked example: a toy reward that is constant for half the
prompts, so their groups have zero variance. The step trains on the first prompts_per_step groups
with unequal rewards in draw order, logs the zero-variance fraction of everything generated, and
fills from the zero-variance groups only when the extra rounds run out."""
import dataclasses

import pytest

from deepretrieval.rl.data import PromptStream
from deepretrieval.rl.dynamic_sampling import select_groups, zero_variance
from deepretrieval.rl.interfaces import Prompt, RewardResult
from deepretrieval.rl.toy_task import CharTokenizer, tiny_model, toy_config
from deepretrieval.rl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["apple", "bread", "cider", "dough", "eagle", "fable", "grape", "honey",
         "igloo", "jelly", "kiwis", "lemon", "mango", "nutty", "olive", "peach"]


@dataclasses.dataclass(frozen=True)
class HalfFlatTask:
    """Prompts 0, 2, 4, ... ("flat") always get reward 0.5; the others get the position of the
    completion's first character in the alphabet / 32, which differs within a group of 4 random
    completions."""

    def prompts(self):
        return [Prompt(text=w + ".", meta={"flat": i % 2 == 0, "index": i}) for i, w in enumerate(WORDS)]

    def reward(self, prompts, completions, **meta):
        return RewardResult([0.5 if p.meta["flat"] else (CharTokenizer.chars.find(c[:1]) + 1) / 32
                             for p, c in zip(prompts, completions)])


def test_zero_variance_and_selection_by_hand():
    assert zero_variance([0.5, 0.5, 0.5]) and not zero_variance([0.5, 0.5, 0.25])
    flags = [(5, False), (0, False), (1, True), (4, True), (2, False), (3, True)]
    assert select_groups(flags, 2) == ([0, 2], 0)              # the first varied groups by position
    assert select_groups(flags, 3) == ([0, 2, 5], 0)
    assert select_groups(flags, 5) == ([0, 2, 5, 1, 3], 2)     # too few: earliest flat ones fill
    with pytest.raises(ValueError, match="7 needed"):
        select_groups(flags, 7)


def _trainer(tmp_path, **overrides):
    cfg = toy_config("grpo", total_steps=1, prompts_per_step=4, mini_batch_prompts=2, group_size=4,
                     **{"dynamic_sampling": True, **overrides})
    return Trainer(cfg, tiny_model(0), CharTokenizer(), HalfFlatTask(), tmp_path, device="cpu")


def _draws(n_rounds, per_round=4, seed=0):
    """The prompt indices the trainer draws, round by round (the same seeded stream)."""
    stream = PromptStream(len(WORDS), seed)
    return [stream.next(per_round) for _ in range(n_rounds)]


def test_step_trains_only_on_groups_with_unequal_rewards(tmp_path):
    trainer = _trainer(tmp_path, dynamic_sampling_extra_rounds=5)
    metrics = trainer.train_step()
    drawn = [i for r in _draws(6) for i in r]
    # worked example: rounds go on until 4 odd ("varied") prompts have been drawn
    varied_at = [k for k, i in enumerate(drawn) if i % 2 == 1]
    rounds = varied_at[3] // 4 + 1
    generated = drawn[:4 * rounds]
    want = [i for i in generated if i % 2 == 1][:4]
    trained = [s.prompt_index for s in trainer._last_samples]
    # one process: slots are [mini 0: positions 0, 1 | mini 1: 2, 3], 4 completions per group
    assert trained == [i for i in want for _ in range(4)]
    assert metrics["groups/rounds"] == rounds and metrics["groups/fillers"] == 0
    assert metrics["groups/zero_variance"] == pytest.approx(
        sum(i % 2 == 0 for i in generated) / len(generated))
    assert metrics["groups/zero_variance"] > 0                       # the example has flat groups
    assert all(s.advantages.abs().sum() > 0 for s in trainer._last_samples[:1])
    assert all(not zero_variance([s.reward for s in trainer._last_samples[g:g + 4]])
               for g in range(0, 16, 4))
    rewards = [s.reward for s in trainer._last_samples]
    assert metrics["reward/mean"] == pytest.approx(sum(rewards) / len(rewards))
    assert trainer.stream.state_dict()["position"] == 4 * rounds    # extra rounds used the stream
    trainer.pool.close()


def test_cap_fills_with_zero_variance_groups(tmp_path):
    trainer = _trainer(tmp_path, dynamic_sampling_extra_rounds=0)
    metrics = trainer.train_step()
    (drawn,) = _draws(1)
    flat = [i for i in drawn if i % 2 == 0]
    assert 0 < len(flat) < 4, drawn                 # the seed gives a mixed first round
    want = [i for i in drawn if i % 2 == 1] + flat  # varied first, then fillers
    assert [s.prompt_index for s in trainer._last_samples[::4]] == want
    assert metrics["groups/fillers"] == len(flat) and metrics["groups/rounds"] == 1
    assert metrics["groups/zero_variance"] == len(flat) / 4
    for s in trainer._last_samples:                 # fillers train with advantage 0
        assert (s.advantages.abs().sum() == 0) == (s.prompt_index % 2 == 0)
    trainer.pool.close()


def test_without_dynamic_sampling_the_fraction_is_still_logged(tmp_path):
    trainer = _trainer(tmp_path, dynamic_sampling=False)
    metrics = trainer.train_step()
    (drawn,) = _draws(1)
    assert [s.prompt_index for s in trainer._last_samples[::4]] == drawn
    assert metrics["groups/zero_variance"] == sum(i % 2 == 0 for i in drawn) / 4
    assert "groups/rounds" not in metrics
    trainer.pool.close()


def test_config_rules():
    with pytest.raises(ValueError, match="needs algorithm='grpo'"):
        toy_config("ppo", dynamic_sampling=True)
    with pytest.raises(ValueError, match="extra_rounds must be >= 0"):
        toy_config("grpo", dynamic_sampling=True, dynamic_sampling_extra_rounds=-1)

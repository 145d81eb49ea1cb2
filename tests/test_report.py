"""deepretrieval.report.training_progress: the demo's table of the first / middle / last third of
the steps and its sentence on whether anything was learned, on hand-made metrics rows."""
from deepretrieval.report import training_progress


def rows(rewards, formats, zero_variance=0.0):
    return [{"step": i + 1, "reward/mean": r, "reward/format_ok": f, "groups/zero_variance": zero_variance}
            for i, (r, f) in enumerate(zip(rewards, formats))]


def test_rising_reward_and_format_are_reported():
    table, verdict = training_progress(rows([-3, -3, -2, -2, -1, 0], [0.25, 0.75, 1, 1, 1, 1]))
    assert table[2] == "| first third (1-2) | -3.0000 | 0.5000 |"
    assert table[3] == "| middle third (3-4) | -2.0000 | 1.0000 |"
    assert table[4] == "| last third (5-6) | -0.5000 | 1.0000 |"
    assert verdict == ("Learned during training: mean reward -3.000 -> -0.500, valid format 0.500 -> 1.000 "
                       "(first third of the steps -> last third).")


def test_nothing_learned_says_why():
    _, verdict = training_progress(rows([-2.0] * 4, [0.0] * 4, zero_variance=1.0))
    assert verdict == ("Nothing was learned: neither the mean reward nor the valid-format rate rose. In 100 % "
                       "of the groups every completion got the same reward, so GRPO had no signal to learn from there.")
    assert training_progress([]) == ([], "No RL step ran, so nothing was learned.")

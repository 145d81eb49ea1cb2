"""bench.grpo_step's arithmetic: the executed-FLOP count by hand, and a tiny CPU run."""
from __future__ import annotations

import dataclasses

from bench import grpo_step
from bench.grpo_step import TINY, update_flops


def test_update_flops_by_hand():
    cfg = dataclasses.replace(TINY, vocab_size=10, hidden_size=4, num_heads=2, head_dim=2,
                              num_layers=3, tie_word_embeddings=True)
    n_params = 1000
    # per sequence of 6 prompt + 2 response tokens: trunk 2 * (1000 - 40) * 8, head 2 * 40 * 2,
    # attention 2 * 2 * (64 / 2) * 4 * 3; forward + backward = 3x; 5 sequences
    want = 3 * 5 * (2 * 960 * 8 + 2 * 40 * 2 + 4 * 32 * 4 * 3)
    assert update_flops(cfg, n_params, 5, 6, 2.0) == want
    untied = dataclasses.replace(cfg, tie_word_embeddings=False)     # lm_head is a weight of its own
    assert update_flops(untied, n_params, 5, 6, 2.0) == want - 3 * 5 * 2 * 40 * 8


def test_tiny_run_smoke(capsys):
    assert grpo_step.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    assert "train MFU (update)" in out and "executed FLOPs" in out

"""`deepretrieval demo` end to end with tiny settings: report.md holds the evaluation's numbers and
the PNG curves exist. The default test swaps in a tiny random Llama (model.name override) so it
runs in seconds; the slow one runs the real built-in SmolLM2-135M-Instruct.

    python -m pytest -q tests/test_cli_demo.py [--run-slow]
"""
from __future__ import annotations

import json

import pytest

from cli_helpers import tiny_llama_dir
from deepretrieval.cli import main
from deepretrieval.report import fmt
from deepretrieval.rl.run_logging import read_jsonl

TINY_DEMO = ["--steps", "1", "--eval-limit", "3", "--device", "cpu", "rl.sampling.max_new_tokens=6",
             "run.eval_max_new_tokens=6", "rl.group_size=2", "--json"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_demo(out_dir, printed: str) -> dict:
    summary = json.loads(printed.strip().splitlines()[-1])
    report = (out_dir / "report.md").read_text()
    evals = {(r["step"], r["variant"]): r for r in read_jsonl(out_dir / "eval.jsonl")}
    raw, zero, after = evals[(0, "raw")], evals[(0, "rewrite")], evals[(1, "rewrite")]
    assert raw["n"] == 3.0 and summary["raw"]["score"] == raw["recall@100"] and summary["rl_steps"] == 1
    for name, row in (("raw input", raw), ("zero-shot model", zero), ("after RL (1 steps)", after)):
        valid = "n/a" if row["valid_format"] is None else f"{100 * row['valid_format']:.1f}%"
        assert f"| {name} | {fmt(row['recall@100'])} | {valid} | {fmt(row['mean_reward'])} |" in report
    assert "the first 3 examples of the test split" in report and "training examples, 1 steps" in report
    assert "## Training" in report and summary["learned"] in report
    for png in ("reward.png", "valid_format.png", "kl.png", "length.png"):
        assert png in report and (out_dir / png).read_bytes()[:8] == PNG_MAGIC
    return summary


def test_demo_with_a_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPRETRIEVAL_CACHE", str(tmp_path / "cache"))
    model = tiny_llama_dir(tmp_path / "tiny")
    assert main(["demo", "--out", str(tmp_path / "demo"), *TINY_DEMO, f"model.name={model}"]) == 0
    summary = check_demo(tmp_path / "demo", capsys.readouterr().out)
    # SciFact's first 3 test claims typed as PubMed queries AND every word: none finds its abstract
    # (the OR of their words finds two of three: tests/test_tasks_rl_options.py checks the split)
    assert summary["raw"]["score"] == 0.0 and summary["raw"]["mean_reward"] == 1.0 - 3.5
    assert summary["learned"].startswith(("Learned", "Nothing was learned"))


def test_demo_refuses_zero_steps(capsys):
    with pytest.raises(SystemExit, match="at least 1 step"):
        main(["demo", "--steps", "0"])


@pytest.mark.slow
def test_demo_with_smollm2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), *TINY_DEMO]) == 0
    summary = check_demo(tmp_path / "demo", capsys.readouterr().out)
    assert summary["zero_shot"]["n"] == 3.0

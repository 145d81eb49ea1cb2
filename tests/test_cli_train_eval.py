"""`deepretrieval train` for 2 steps and then `deepretrieval eval`, on every task family, with a
tiny random Llama (SmolLM2's real tokenizer) and tiny real data; resume, export (against
transformers) and torchrun through the CLI.

    python -m pytest -q tests/test_cli_train_eval.py

The random model never writes the think/answer tags, so every training reward is the family's
format penalty (checked), every rewrite is unanswered, and the rewrite_or_raw fallback equals the
raw query. `eval --checkpoint RUN` must reproduce the run's own final evaluation exactly (the
checkpoint and the export are the same policy).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import beir_subset, qa_fixture, review_fixture, tiny_llama_dir
from deepretrieval.cli import main
from deepretrieval.policy import RUN_CONFIG
from deepretrieval.run_config import load_config
from deepretrieval.rl.run_logging import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.max_prompt_tokens=4096", "model.device=cpu", "rl.total_steps=2", "rl.prompts_per_step=2",
        "rl.mini_batch_prompts=2", "rl.micro_batch_size=4", "rl.sampling.max_new_tokens=6",
        "rl.gradient_checkpointing=false", "rl.reward_workers=1", "rl.rollout_chunk_prompts=1",
        "run.eval_limit=2", "run.eval_max_new_tokens=6", "run.eval_every=0"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


def family_setup(family: str, tmp: Path, scifact: Path, spider: Path):
    """(config file, family overrides, format penalty, eval metric)."""
    if family == "classic_ir":
        data = beir_subset(scifact, tmp / "beir")
        return "scifact_bm25_grpo.toml", [f"task.data={data}", "rl.group_size=2"], -2.0, "ndcg@10"
    if family == "evidence_seeking":
        data = qa_fixture(scifact, tmp / "qa")
        return "nq.toml", [f"task.data={data}", f"task.passages={data / 'psgs_w100.tsv'}",
                           'task.engine.index=""'], -4.0, "hits@20"
    if family == "literature_search":
        return "pubmed_offline.toml", [f"task.data={review_fixture(tmp / 'reviews')}"], -4.0, "recall@3000"
    return "spider.toml", [f"task.data={spider}", 'task.split_map={train = "dev", test = "dev"}',
                           "task.limit=4", "task.workers=1"], -2.0, "exec_acc"


def run_cli(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("step", "when", "model", "examples")}


@pytest.mark.parametrize("family", ["classic_ir", "evidence_seeking", "literature_search", "text_to_sql"])
def test_train_then_eval(family, tiny_model, tmp_path, scifact_dir, spider_dir, capsys):
    config, overrides, penalty, metric = family_setup(family, tmp_path, scifact_dir, spider_dir)
    config = str(ROOT / "configs" / config)
    overrides = [f"model.name={tiny_model}", *TINY, *overrides]
    run_dir = tmp_path / "run"
    out = run_cli(["train", "--config", config, *overrides, "--run-dir", str(run_dir), "--json"], capsys)

    cfg = load_config(run_dir / RUN_CONFIG)
    assert cfg == load_config(config, overrides + [f"run.out_dir={json.dumps(str(run_dir))}"])
    assert cfg.task.family == family
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["reward/mean"] == penalty for m in metrics)
    assert all("</answer>" not in r["completion"] for r in read_jsonl(run_dir / "rollouts.jsonl"))
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert sorted({r["step"] for r in evals}) == [0, 2]
    variants = ["raw", "rewrite", "rewrite_or_raw"] if family != "text_to_sql" else ["rewrite"]
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(r["when"], r["variant"]) for r in printed] == [(w, v) for w in ("before", "after") for v in variants]
    final = {r["variant"]: r for r in evals if r["step"] == 2}
    assert final["rewrite"]["valid_format"] == 0.0 and final["rewrite"]["unanswered"] == 2.0
    assert final["rewrite"]["mean_reward"] == penalty and final["rewrite"][metric] == 0.0
    assert (run_dir / "export" / "model.safetensors").is_file() and (run_dir / "curves.png").is_file()

    # eval from the run's checkpoint reproduces the run's final evaluation
    out = run_cli(["eval", "--config", config, *overrides, "--checkpoint", str(run_dir), "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["variant"] for r in rows] == variants
    for row in rows:
        assert strip(row) == strip(final[row["variant"]])
    if family != "text_to_sql":
        same = {"variant": "", "valid_format": None, "mean_reward": None, "fallbacks": 2.0}
        assert strip(final["rewrite_or_raw"]) | same == strip(final["raw"]) | same
        assert final["raw"]["n"] == 2.0


@pytest.fixture(scope="module")
def resumed_run(tiny_model, tmp_path_factory, scifact_dir):
    """A 2-step run, then its step-2 checkpoint deleted (as if killed just before saving it) and
    the run resumed from step 1: (metrics of the first history, the resumed run's folder)."""
    tmp = tmp_path_factory.mktemp("resume")
    config, overrides, _, _ = family_setup("classic_ir", tmp, scifact_dir, None)
    run_dir = tmp / "run"
    args = ["train", "--config", str(ROOT / "configs" / config), f"model.name={tiny_model}", *TINY,
            *overrides, "run.eval_limit=1", "rl.checkpoint_every=1", "--run-dir", str(run_dir)]
    assert main(args) == 0
    first = read_jsonl(run_dir / "metrics.jsonl")
    shutil.copy(run_dir / "eval.jsonl", tmp / "eval_first.jsonl")
    shutil.rmtree(run_dir / "checkpoints" / "step_00000002")
    assert main(args + ["--resume"]) == 0
    return first, run_dir


def test_resume_continues_exactly(resumed_run):
    first, run_dir = resumed_run
    resumed = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in resumed] == [1, 2]           # step 2 of the first history is dropped
    assert resumed[0] == first[0]
    for key in ("kl", "entropy", "grad_norm", "logprob_diff/max", "response_length/mean", "reward/mean"):
        assert resumed[1][key] == pytest.approx(first[1][key], rel=1e-5, abs=1e-7), key
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [r["step"] for r in evals] == [0] * 3 + [2] * 3     # the final evaluation redone, not repeated
    assert [strip(r) for r in evals] == [strip(r) for r in read_jsonl(run_dir.parent / "eval_first.jsonl")]


def test_export_loads_in_transformers(resumed_run, tmp_path, capsys):
    """export --checkpoint RUN: transformers loads it and gives our logits; the tokenizer and chat
    template round-trip too."""
    import torch
    import transformers
    from deepretrieval.policy import load_policy
    from deepretrieval.model.chat_template import render_chat
    _, run_dir = resumed_run
    out = json.loads(run_cli(["export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "hf"), "--json"], capsys))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(out["files"])
    ours, tok = load_policy(run_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    messages = [{"role": "user", "content": "Vitamin D deficiency causes fractures (1,000 cases)."}]
    text = render_chat(messages, tok.chat_template, assistant_prefix="<think>\n")
    assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "<think>\n" == text
    ids = tok.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x), rtol=1e-4, atol=1e-5)
    reloaded, tok2 = load_policy(tmp_path / "hf")
    assert tok2.chat_template == tok.chat_template and tok2.stop_token_ids == tok.stop_token_ids
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), ours.state_dict().values()))


def test_rewrite_prints_the_completion_and_no_hits_without_a_query(resumed_run, tmp_path, scifact_dir, capsys):
    from deepretrieval.commands.rewrite import search
    from deepretrieval.training import build_eval_task
    _, run_dir = resumed_run
    config = str(run_dir / RUN_CONFIG)
    out = json.loads(run_cli(["rewrite", "--checkpoint", str(run_dir), "--config", config, "--json",
                              "vitamin D deficiency and fractures"], capsys))
    assert out["need"] == "vitamin D deficiency and fractures" and out["query"] is None and out["hits"] == []
    assert 0 < len(out["completion"])
    task = build_eval_task(load_config(config))        # the hits the command would print for a query
    hits = search(task, "vitamin D deficiency fractures", 3)
    assert [h["id"] for h in hits] == [d for d, _ in task.retriever.search(["vitamin D deficiency fractures"], k=3)[0]]


def test_time_limit_stops_training_after_the_step_that_uses_it_up(tiny_model, tmp_path, scifact_dir, capsys):
    config, overrides, _, _ = family_setup("classic_ir", tmp_path, scifact_dir, None)
    run_dir = tmp_path / "run"
    run_cli(["train", "--config", str(ROOT / "configs" / config), f"model.name={tiny_model}", *TINY, *overrides,
             "run.eval_limit=1", "rl.total_steps=50", "rl.max_minutes=0.0001", "--run-dir", str(run_dir)], capsys)
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_00000001"]
    assert sorted({r["step"] for r in read_jsonl(run_dir / "eval.jsonl")}) == [0, 1]


def test_torchrun_two_processes_match_one(tiny_model, tmp_path, scifact_dir, capsys):
    config, overrides, _, _ = family_setup("classic_ir", tmp_path, scifact_dir, None)
    args = ["train", "--config", str(ROOT / "configs" / config), f"model.name={tiny_model}", *TINY, *overrides,
            "run.eval_limit=1"]
    run_cli(args + ["--run-dir", str(tmp_path / "one")], capsys)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--standalone", "-m", "deepretrieval", *args, "--run-dir", str(tmp_path / "two")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [m["step"] for m in two] == [1, 2]
    for a, b in zip(one, two):
        for key in ("reward/mean", "kl", "entropy", "response_length/mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    after = lambda d: [strip(r) for r in read_jsonl(tmp_path / d / "eval.jsonl") if r["step"] == 2]
    assert after("two") == after("one")

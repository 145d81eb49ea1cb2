"""The supervised cold start (deepretrieval/cold_start.py): traces answer each training example
with its own target in the task's format, so the task's reward gives them full marks; and
`bench.rl_gain --cold-start` runs SFT, then RL, scoring the base model as zero-shot and the
fine-tuned model apart (a tiny CPU run)."""
import json

import pytest

from bench import rl_gain
from deepretrieval.cold_start import best_edits, answer_traces, single_word_edits
from deepretrieval.rl.interfaces import Prompt
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.registry import TaskConfig, build_task


def _reward_of_traces(task, n):
    prompts = task.prompts("train")[:n]
    answers = [t["messages"][-1]["content"] for t in answer_traces(task)[:n]]
    assert [t["messages"][:-1] for t in answer_traces(task)[:n]] == [list(p.messages) for p in prompts]
    completions = [a[len(p.assistant_prefix):] for p, a in zip(prompts, answers)]   # the model's part
    assert all(a.startswith(p.assistant_prefix) for p, a in zip(prompts, answers))
    rewards, _ = task.reward(prompts, completions)
    return answers, rewards


def test_sql_traces_hold_the_gold_sql_and_earn_the_full_reward():
    task = build_task(TaskConfig(family="text_to_sql", data="builtin:spider", split_map={"test": "dev"},
                                 db_split=True, val_fraction=0.2, reasoning=False))
    try:
        answers, rewards = _reward_of_traces(task, 8)
        gold = [ex["gold_sql"] for ex in task.split_examples("train")[:8]]
        assert answers == ['<answer>' + json.dumps({"sql": g}) + '</answer>' for g in gold]
        assert rewards == [pytest.approx(1.1)] * 8          # the paper's Spider reward for a match
        assert len(answer_traces(task)) == 432
    finally:
        task.close()


def test_query_traces_answer_with_the_users_own_text():
    task = build_task(TaskConfig(family="classic_ir", data="builtin:scifact", template="scifact",
                                 engine=EngineConfig(kind="bm25"), reasoning=True))
    answers, _ = _reward_of_traces(task, 3)
    claims = task.raw_queries("train")[:3]
    for answer, claim in zip(answers, claims):
        assert answer.endswith('</think>\n<answer>' + json.dumps({"query": claim}) + '</answer>')


def test_single_word_edits():
    text = "Vitamin D (calcitriol) prevents bone fractures."
    assert single_word_edits(text, expand=True) == ["Vitamin", "calcitriol", "prevents", "bone", "fractures"]
    rewrite = single_word_edits(text, expand=False)
    assert rewrite[0] == text and rewrite[1] == text + " Vitamin" and len(rewrite) == 11
    assert rewrite[6] == "D (calcitriol) prevents bone fractures."           # "Vitamin" dropped
    assert rewrite[-1] == "Vitamin D (calcitriol) prevents bone"


def test_best_edits_never_score_below_the_users_text_and_often_above():
    task = build_task(TaskConfig(family="classic_ir", data="builtin:scifact", template="scifact",
                                 engine=EngineConfig(kind="bm25"), reasoning=False, val_fraction=0.2))
    task.limit(60, splits=["train"])
    raw, edits = task.raw_queries("train"), best_edits(task)
    prompts = task.prompts("train")
    r_raw, _ = task.reward(prompts, [task.well_formed(p, q) for p, q in zip(prompts, raw)])
    r_edit, _ = task.reward(prompts, [task.well_formed(p, q) for p, q in zip(prompts, edits)])
    assert all(e >= r for e, r in zip(r_edit, r_raw))
    better = sum(e > r for e, r in zip(r_edit, r_raw))
    assert better >= 10 and all(a == q for a, q, e, r in zip(edits, raw, r_edit, r_raw) if e == r)
    traces = answer_traces(task, "best_edit")
    assert [t["messages"][-1]["content"] for t in traces] == [
        p.assistant_prefix + task.well_formed(p, a) for p, a in zip(prompts, edits)]
    with pytest.raises(ValueError, match="one of"):
        answer_traces(task, "silver")


def test_completion_prompts_are_refused():
    class Completion:
        answer_key = "query"
        def prompts(self, split):
            return [Prompt(text="claim:", assistant_prefix="")]
        def split_examples(self, split):
            return [{"input": "x"}]
    with pytest.raises(ValueError, match="chat prompts"):
        answer_traces(Completion())


def test_rl_gain_cold_start_scores_base_sft_and_rl_then_resumes(tmp_path, capsys):
    """One step of RL after a gold cold start, scored; then --resume asked for 2 RL steps: the
    cold start is not redone (its checkpoint is final: it only exports again) and RL goes on from
    step 1 to step 2."""
    out = tmp_path / "run"
    args = ["--config", "configs/spider_crossdb_smollm2.toml", "--no-record", "--device", "cpu",
            "--out", str(out), "--cold-start", "gold", "task.limit=2", "rl.prompts_per_step=2",
            "rl.group_size=2", "rl.mini_batch_prompts=2", "rl.micro_batch_size=4", "rl.dynamic_sampling=false",
            "rl.sampling.max_new_tokens=8", "run.eval_max_new_tokens=8", "sft.batch_size=2",
            "sft.micro_batch_size=2", "rl.checkpoint_every=1"]
    rl_gain.main([*args, "rl.total_steps=1"])
    report = (out / "report.md").read_text()
    for split in ("val", "test"):
        for label in ("zero-shot model", "cold start (SFT), before RL", "RL model"):
            assert f"| {split} | {label} |" in report
    assert "trained with SFT, then GRPO" in report
    assert len((out / "sft" / "traces.jsonl").read_text().splitlines()) == 2
    assert (out / "sft" / "export" / "config.json").is_file() and (out / "export" / "config.json").is_file()
    resolved = json.loads((out / "run_config.json").read_text())
    assert resolved["model"]["name"] == str(out / "sft" / "export")     # RL started from the SFT model

    sft_steps = [r["step"] for r in read_jsonl(out / "sft" / "metrics.jsonl")]
    traces_written = (out / "sft" / "traces.jsonl").stat().st_mtime_ns
    rl_gain.main([*args, "rl.total_steps=2", "--resume"])
    assert [r["step"] for r in read_jsonl(out / "sft" / "metrics.jsonl")] == sft_steps
    assert (out / "sft" / "traces.jsonl").stat().st_mtime_ns == traces_written
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert "2 RL steps" in (out / "report.md").read_text()


def test_rl_gain_takes_overrides_between_options():
    args = rl_gain.parse_args(["--config", "c.toml", "task.data=/beir", "--no-record", "rl.seed=1", "--minutes", "2"])
    assert (args.overrides, args.no_record, args.minutes) == (["task.data=/beir", "rl.seed=1"], True, 2.0)

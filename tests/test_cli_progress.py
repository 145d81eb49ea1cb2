"""What the commands tell the user while they run: the evaluation progress bar moves per decode
step (not per batch) without changing a completion, a CPU run says up front how much each
evaluation generates, and a resumed run says when its 'before' rows were made with other settings.

    python -m pytest -q tests/test_cli_progress.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import deepretrieval.evaluation as evaluation
from cli_helpers import tiny_llama_dir
from deepretrieval.cli import main
from deepretrieval.commands.train import changed_eval_settings, cpu_eval_notice
from deepretrieval.evaluation import RewriteSettings, encode_prompts, rewrite
from deepretrieval.model.sampler import SamplingParams, generate
from deepretrieval.policy import RUN_CONFIG, load_policy
from deepretrieval.rl.interfaces import Prompt
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.run_config import load_config, write_resolved

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "scifact_bm25_grpo.toml")
NEEDS = ["vitamin D prevents fractures", "aspirin lowers the risk of stroke", "statins and memory loss"]


class RecordingBar:
    """tqdm's interface as `rewrite` uses it, recording every call."""
    made: list["RecordingBar"] = []

    def __init__(self, total, **_):
        self.total, self.n, self.updates, self.postfixes = total, 0, [], []
        RecordingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def update(self, n=1):
        self.n += n
        self.updates.append(n)

    def set_postfix(self, **kwargs):
        self.postfixes.append(kwargs)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


def test_progress_moves_per_decode_step_and_completions_are_unchanged(tiny_model, monkeypatch):
    model, tok = load_policy(tiny_model)
    prompts = [Prompt(text=need) for need in NEEDS]
    ids = encode_prompts(prompts, tok, 1024)
    # the first greedy token of every prompt made a stop token: every row stops at once, and the
    # sampler notices it at its first host check (step sync_every = 8)
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    tok.stop_token_ids = sorted({t[0] for start in (0, 2) for t in generate(
        model, ids[start:start + 2], params, pad_token_id=tok.pad_token_id).token_lists()})
    settings = RewriteSettings(max_new_tokens=20, batch_size=2, seed=5)
    monkeypatch.setattr(evaluation, "tqdm", RecordingBar)
    RecordingBar.made.clear()
    completions = rewrite(model, tok, prompts, settings)
    [bar] = RecordingBar.made
    assert bar.total == 2 * 20                                 # 2 batches x max_new_tokens steps
    assert bar.updates == [1] * 8 + [12] + [1] * 8 + [12]      # per step, then the early stop's jump
    assert bar.n == bar.total
    assert bar.postfixes == [{"prompts": "2/3", "tokens": 2}, {"prompts": "3/3", "tokens": 3}]
    # the same completions as generating batch by batch without a progress callback
    stops = SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=tuple(tok.stop_token_ids))
    expected = [tok.decode(t, skip_special_tokens=True) for start in (0, 2)
                for t in generate(model, ids[start:start + 2], stops, pad_token_id=tok.pad_token_id,
                                  seed=5 + start).token_lists()]
    assert completions == expected


def test_cpu_notice_says_how_much_an_evaluation_generates():
    cfg = load_config(CONFIG, ["model.device=cpu", "run.eval_limit=16", "run.eval_max_new_tokens=512"])
    assert cpu_eval_notice(cfg) == (
        "note: on CPU each evaluation generates up to 512 new tokens for each of the first 16 test prompt(s), "
        "which can take many minutes; run.eval_limit=N run.eval_max_new_tokens=M make it smaller")
    assert "for each of 300 test prompt(s)," in cpu_eval_notice(cfg, prompts=300)
    everything = load_config(CONFIG, ["model.device=cpu", "run.eval_limit=0", "run.eval_split=dev"])
    assert "up to 512 new tokens for each of every dev prompt," in cpu_eval_notice(everything)


def test_changed_eval_settings_lists_only_what_the_rows_depend_on(tmp_path):
    first = load_config(CONFIG, ["run.eval_max_new_tokens=512"])
    write_resolved(first, tmp_path, RUN_CONFIG)
    assert changed_eval_settings(tmp_path, first) == []
    assert changed_eval_settings(tmp_path / "absent", first) == []
    later = load_config(CONFIG, ["run.eval_max_new_tokens=64", "rl.total_steps=99", "run.eval_every=5",
                                 'task.split_map={test = "dev"}', "model.max_prompt_tokens=512"])
    assert changed_eval_settings(tmp_path, later) == [
        'model.max_prompt_tokens: 256 -> 512', "run.eval_max_new_tokens: 512 -> 64",
        'task.split_map.test: null -> "dev"']


def test_resumed_run_notes_other_evaluation_settings(tiny_model, tmp_path, scifact_dir, capsys):
    """Train 1 step on CPU, then resume to 2 steps with a shorter evaluation budget: the 'before'
    rows (step 0, the first run's) are printed with a note naming the setting that changed."""
    from cli_helpers import beir_subset
    from test_cli_train_eval import TINY
    data = beir_subset(scifact_dir, tmp_path / "beir")
    run_dir = tmp_path / "run"
    args = ["train", "--config", CONFIG, f"model.name={tiny_model}", *TINY, f"task.data={data}", "rl.group_size=2",
            "run.eval_limit=1", "rl.checkpoint_every=1", "--run-dir", str(run_dir)]
    assert main(args + ["rl.total_steps=1"]) == 0
    first = capsys.readouterr()
    assert first.err.splitlines()[0] == (
        "note: on CPU each evaluation generates up to 6 new tokens for each of the first 1 test prompt(s), "
        "which can take many minutes; run.eval_limit=N run.eval_max_new_tokens=M make it smaller")
    assert "note: the 'before' rows" not in first.out

    assert main(args + ["rl.total_steps=2", "run.eval_max_new_tokens=4", "--resume"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:6]] == ["before"] * 3 + ["after"] * 3
    assert out[6:] == ["note: the 'before' rows were evaluated by an earlier run in this directory, with other "
                       "settings: run.eval_max_new_tokens: 6 -> 4", f"run written to {run_dir}"]
    assert sorted({r["step"] for r in read_jsonl(run_dir / "eval.jsonl")}) == [0, 1, 2]
    assert json.loads((run_dir / RUN_CONFIG).read_text())["run"]["eval_max_new_tokens"] == 4

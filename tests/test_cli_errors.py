"""Mistakes a user makes on the command line end in one line that says what was wrong and what to
do (SystemExit), before anything slow is loaded, never in a traceback: an unknown or absent
device anywhere, `train --resume` without a checkpoint, a new run into a directory that holds one,
`rewrite` of an empty need.

    python -m pytest -q tests/test_cli_errors.py
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepretrieval.cli import main
from deepretrieval.model.registry import resolve_device

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "scifact_bm25_grpo.toml")
VALID = "use auto (cuda when present, else cpu), cpu, cuda or cuda:N"


def one_line_exit(argv: list[str]) -> str:
    """The message of the SystemExit that `deepretrieval ARGV` ends with (asserted one line)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = exc.value.code
    assert isinstance(message, str) and "\n" not in message, message
    return message


def test_resolve_device_names_the_valid_values():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "CPU", "cuda:", "cuda:x", "mps", " cpu", ""):
        with pytest.raises(ValueError) as exc:
            resolve_device(bad)
        assert str(exc.value) == f"unknown device {bad!r}: {VALID}"
    gpus = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"device 'cuda:{gpus}' was asked for but torch sees {gpus} CUDA GPU"):
        resolve_device(f"cuda:{gpus}")            # one past the last GPU (cuda:0 on a CPU machine)


@pytest.mark.parametrize("argv,setting", [
    (["train", "--config", CONFIG, "model.device=gpu"], "model.device"),
    (["eval", "--config", CONFIG, "model.device=gpu"], "model.device"),
    (["sft", "--config", CONFIG, "--data", "traces.jsonl", "model.device=gpu"], "model.device"),
    (["rewrite", "--model", "smollm2-135m", "vitamin D", "model.device=gpu"], "model.device"),
    (["generate", "--prompt", "Hello", "--device", "gpu"], "deepretrieval generate"),
    (["build-index", "--beir", "builtin:scifact", "--retriever", "dense", "--device", "gpu"], "--device"),
    (["eval-retrieval", "--beir", "builtin:scifact", "--retriever", "dense", "--device", "gpu"], "--device"),
], ids=lambda x: x[0] if isinstance(x, list) else "")
def test_unknown_device_is_one_line(argv, setting, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                   # a run directory or index, if made, lands here
    if argv[0] == "build-index":
        argv = argv + ["--out", str(tmp_path / "index")]
    assert one_line_exit(argv) == f"{setting}: unknown device 'gpu': {VALID}"
    assert list(tmp_path.iterdir()) == []         # refused before anything was written


def test_dense_saved_index_checks_the_device(tmp_path):
    """`search --index` / `eval-retrieval --index` check the device of a dense index (a BM25
    index never uses it)."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(["vitamin D and bone", "aspirin dose"])))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin D"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    assert main(["build-index", "--beir", str(beir), "--out", str(tmp_path / "dense"), "--retriever", "dense"]) == 0
    for argv in (["search", "--index", str(tmp_path / "dense"), "vitamin"],
                 ["eval-retrieval", "--beir", str(beir), "--index", str(tmp_path / "dense")]):
        assert one_line_exit(argv + ["--device", "gpu"]) == f"--device: unknown device 'gpu': {VALID}"


def test_missing_gpu_is_one_line(tmp_path):
    gpus = torch.cuda.device_count()
    message = one_line_exit(["train", "--config", CONFIG, f"model.device=cuda:{gpus}",
                             "--run-dir", str(tmp_path / "run")])
    assert message.startswith(f"model.device: device 'cuda:{gpus}' was asked for but torch sees {gpus} CUDA GPU(s)")


def test_console_script_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deepretrieval", "train", "--config", CONFIG, "model.device=gpu",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"model.device: unknown device 'gpu': {VALID}\n"


def test_resume_without_a_checkpoint_is_one_line_before_loading(tmp_path):
    run_dir = tmp_path / "run"
    message = one_line_exit(["train", "--config", CONFIG, "model.name=/no/such/model", "--run-dir", str(run_dir),
                             "--resume"])
    assert message == (f"--resume given but {run_dir / 'checkpoints'} holds no checkpoint; "
                       f"run without --resume to start a new run")
    assert not run_dir.exists()                   # nothing loaded (the model does not exist), nothing written


def test_new_run_into_a_run_directory_keeps_the_old_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_00000003").mkdir(parents=True)
    (run_dir / "eval.jsonl").write_text('{"step": 0}\n')
    message = one_line_exit(["train", "--config", CONFIG, "model.name=/no/such/model", "--run-dir", str(run_dir)])
    assert message == (f"{run_dir} already holds checkpoints of a run (newest step_00000003): "
                       "continue it with --resume, or choose a new run directory")
    assert (run_dir / "eval.jsonl").read_text() == '{"step": 0}\n'      # the old run's evaluations kept
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "eval.jsonl"]


@pytest.mark.parametrize("need", ["", "   ", "\n\t"])
def test_rewrite_refuses_an_empty_need_before_loading(need):
    # neither the model nor the config exists: the need is checked before either is read
    message = one_line_exit(["rewrite", "--model", "/no/such/model", "--config", "/no/such.toml", need])
    assert message.startswith("rewrite: the information need is empty; give it as text, e.g. deepretrieval rewrite")

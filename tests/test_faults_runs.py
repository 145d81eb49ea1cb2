"""Crashes and damaged files around a training run (rl/run_logging.py, training.py, model loading):

- a process SIGKILLed in the middle of writing metrics.jsonl / rollouts.jsonl leaves an unfinished
  last line; `--resume` drops it (with a warning) and the run goes on to its last step;
- `deepretrieval train` with eval_every=3 and checkpoint_every=2, SIGKILLed at step 4 before its
  checkpoint and resumed from step 2: eval.jsonl holds the step-3 evaluation once;
- NaN/inf weights in safetensors, or a GGUF whose tensor type was edited, are refused with one line
  naming the tensor; a config.json without hidden_size names the key and the file; and PPO's
  advantage whitening no longer turns constant rewards into NaN weights.

Run as a script (`python tests/test_faults_runs.py torn RUN_DIR` or `... cli RUN_DIR ARGS...`)
this file is the worker that kills itself with SIGKILL at the chosen moment.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TORN_AT = 3            # the toy run dies writing this step's metrics row (checkpoints every 2)
DIE_AT_SAVE = 4        # the CLI run dies when it starts to save this step's checkpoint


def _toy_trainer(run_dir):
    from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
    from deepretrieval.rl.trainer import Trainer
    cfg = toy_config("ppo", total_steps=4, checkpoint_every=2, log_rollouts=2)
    return Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), run_dir, device="cpu")


def _worker(mode: str, run_dir: Path, argv: list[str]) -> None:
    """Arrange the kill, then run: `torn` writes half of step TORN_AT's metrics row and half a
    rollouts row, flushed to the files, then SIGKILLs itself (a crash mid-write); `cli` runs
    `deepretrieval` and SIGKILLs itself when checkpoint DIE_AT_SAVE is about to be saved."""
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if mode == "torn":
        from deepretrieval.rl import run_logging
        write_metrics = run_logging.RunLogger.metrics

        def metrics(self, step, values):
            if step != TORN_AT:
                return write_metrics(self, step, values)
            for name, row in ((run_logging.METRICS, {"step": step, **values}),
                              (run_logging.ROLLOUTS, {"step": step, "completion": "aaaa"})):
                line = json.dumps(row)
                with (run_dir / name).open("a") as f:
                    f.write(line[: len(line) // 2])
            die()

        run_logging.RunLogger.metrics = metrics
        torch.set_num_threads(1)
        _toy_trainer(run_dir).fit()
    else:
        from deepretrieval.cli import main
        from deepretrieval.rl import checkpoint
        save = checkpoint.save_checkpoint
        checkpoint.save_checkpoint = lambda root, step, *a, **k: die() if step == DIE_AT_SAVE else save(root, step, *a, **k)
        main(argv)


def _run_worker(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return proc


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- torn last lines ------------------------------------------------------------------
def test_resume_drops_lines_torn_by_a_kill(tmp_path, caplog):
    from deepretrieval.rl.run_logging import read_jsonl
    run_dir = tmp_path / "run"
    _run_worker("torn", str(run_dir))
    metrics, rollouts = run_dir / "metrics.jsonl", run_dir / "rollouts.jsonl"
    assert not metrics.read_bytes().endswith(b"\n") and not rollouts.read_bytes().endswith(b"\n")
    before = read_jsonl(metrics)                       # the unfinished line is not a row
    assert [r["step"] for r in before] == [1, 2]
    with caplog.at_level(logging.WARNING, logger="deepretrieval.rl.run_logging"):
        _toy_trainer(run_dir).fit(resume=True)
    for path in (metrics, rollouts):
        assert f"{path}: dropped its unfinished last line" in caplog.text
        assert path.read_bytes().endswith(b"\n")
        assert all(json.loads(line) for line in path.read_text().splitlines())
    after = read_jsonl(metrics)
    assert [r["step"] for r in after] == [1, 2, 3, 4] and after[:2] == before
    assert [r["step"] for r in read_jsonl(rollouts)] == [1, 1, 2, 2, 3, 3, 4, 4]


def test_jsonl_reading_rules(tmp_path, caplog):
    from deepretrieval.rl.run_logging import read_jsonl, trim_jsonl
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}')         # complete, only the newline missing: a row
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert trim_jsonl(path, lambda r: r["step"] <= 1) == 1
    assert path.read_bytes() == b'{"step": 1}\n'
    path.write_bytes(b'{"step": 1}\n{"step": 2, "los')       # torn
    with caplog.at_level(logging.WARNING, logger="deepretrieval.rl.run_logging"):
        assert trim_jsonl(path, lambda r: True) == 0
    assert path.read_bytes() == b'{"step": 1}\n' and "(16 bytes, written when the run was killed)" in caplog.text
    path.write_bytes(b'{"step": 1}\n{"step": oops}\n{"step": 3}\n')   # damage in the middle: an error
    with pytest.raises(ValueError, match=r"m\.jsonl line 2 is not JSON .*fix or delete that line"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "absent.jsonl") == []


# --- eval.jsonl after a kill and resume -----------------------------------------------
def test_eval_rows_are_not_duplicated_by_kill_and_resume(tmp_path, scifact_dir):
    from cli_helpers import tiny_llama_dir
    from deepretrieval.cli import main
    from deepretrieval.rl.checkpoint import latest_checkpoint
    from deepretrieval.rl.run_logging import read_jsonl
    from test_cli_train_eval import TINY, family_setup, strip
    config, overrides, _, _ = family_setup("classic_ir", tmp_path, scifact_dir, None)
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / config), f"model.name={tiny_llama_dir(tmp_path / 'tiny')}",
            *TINY, *overrides, "run.eval_limit=1", "rl.total_steps=4", "run.eval_every=3",
            "rl.checkpoint_every=2", "--run-dir", str(run_dir)]
    _run_worker("cli", str(run_dir), *args)
    killed = read_jsonl(run_dir / "eval.jsonl")
    assert [r["step"] for r in killed] == [0] * 3 + [3] * 3
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    assert latest_checkpoint(run_dir / "checkpoints").name == "step_00000002"

    assert main(args + ["--resume"]) == 0               # from step 2: steps 3 and 4 again
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [r["step"] for r in evals] == [0] * 3 + [3] * 3 + [4] * 3
    assert [strip(r) for r in evals[:6]] == [strip(r) for r in killed]   # step 3 redone identically
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]


# --- weights and configs that must not load -------------------------------------------
@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    from deepretrieval.model.hf_weights import save_hf
    from deepretrieval.rl.toy_task import tiny_model
    return save_hf(tiny_model(0), tmp_path_factory.mktemp("tiny-hf"))


def _copy_with(src: Path, dst: Path, key: str, edit) -> Path:
    from safetensors.torch import load_file, save_file
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(src / "model.safetensors")
    tensors[key] = edit(tensors[key].clone())
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_safetensors_weight_is_refused(tiny_hf, tmp_path, value):
    from deepretrieval.model.hf_weights import WeightLoadError, load_hf
    key = "model.layers.1.mlp.down_proj.weight"

    def poison(t):
        t[3, 5] = value
        return t
    folder = _copy_with(tiny_hf, tmp_path / "bad", key, poison)
    with pytest.raises(WeightLoadError) as exc:
        load_hf(folder)
    msg = str(exc.value)
    assert f"'{key}' (in {folder / 'model.safetensors'}) holds 1 NaN/inf value(s) of 8192" in msg
    assert "\n" not in msg
    assert load_hf(tiny_hf).layers[1].mlp.down.weight.isfinite().all()     # the original loads


def test_weight_beyond_float16_range_is_refused_in_float16_only(tiny_hf, tmp_path):
    from deepretrieval.model.hf_weights import WeightLoadError, load_hf
    key = "model.embed_tokens.weight"

    def big(t):
        t[0, 0] = 1e6                                   # float16 tops out at 65504
        return t
    folder = _copy_with(tiny_hf, tmp_path / "big", key, big)
    with pytest.raises(WeightLoadError, match=rf"'{key}' .* has values beyond the range of torch.float16"):
        load_hf(folder, dtype=torch.float16)
    assert load_hf(folder, dtype=torch.bfloat16).embed.weight[0, 0].item() == pytest.approx(1e6, rel=1e-2)


@pytest.fixture(scope="module")
def type_field_offsets() -> dict[str, int]:
    """File offset of each SmolLM2 GGUF tensor's type field (tensor info: name length, name,
    n_dims, dims, type, offset), found by parsing the file once."""
    import gguf
    from deepretrieval.model.registry import smollm2_gguf_path
    reader = gguf.GGUFReader(smollm2_gguf_path())
    return {t.name: t.field.offset + sum(part.nbytes for part in t.field.parts[:4]) for t in reader.tensors}


@pytest.mark.parametrize("name, new_type, needs, room", [
    ("blk.0.ffn_down.weight", "F32", 1536 * 576 * 4, 552960),        # Q4_1 -> F32: reads its neighbours
    ("blk.0.attn_norm.weight", "F16", 576 * 2, 2304),                  # F32 -> F16: half of its data
])
def test_gguf_with_an_edited_tensor_type_is_refused(tmp_path, type_field_offsets, name, new_type, needs, room):
    import gguf
    from deepretrieval.model.gguf_weights import load_gguf
    from deepretrieval.model.hf_weights import WeightLoadError
    from deepretrieval.model.registry import smollm2_gguf_path
    path = tmp_path / "edited.gguf"
    shutil.copy(smollm2_gguf_path(), path)
    with path.open("r+b") as f:
        f.seek(type_field_offsets[name])
        f.write(int(gguf.GGMLQuantizationType[new_type]).to_bytes(4, "little"))
    with pytest.raises(WeightLoadError) as exc:
        load_gguf(path)
    msg = str(exc.value)
    assert f"GGUF tensor '{name}' ({new_type}, " in msg and f"needs {needs} bytes but has {room} before" in msg
    assert "\n" not in msg


def test_config_without_hidden_size_names_key_and_file(tiny_hf, tmp_path):
    from deepretrieval.cli import main
    from deepretrieval.model.config import ModelConfig
    from deepretrieval.model.hf_weights import load_hf
    folder = tmp_path / "no-hidden"
    shutil.copytree(tiny_hf, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    expected = f"{folder / 'config.json'} has no 'hidden_size' (a llama config needs vocab_size, hidden_size"
    for load in (ModelConfig.from_file, load_hf):
        with pytest.raises(ValueError) as exc:
            load(folder)
        assert str(exc.value).startswith(expected) and "\n" not in str(exc.value)
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", str(folder), "--prompt", "hi", "--device", "cpu"])
    assert expected in str(exc.value) and "\n" not in str(exc.value)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": "64"}))
    with pytest.raises(ValueError, match="has 'hidden_size' = '64', not a number"):
        ModelConfig.from_file(folder)


def test_whitening_nearly_equal_advantages_stays_finite():
    """Constant rewards give advantages equal up to float32 noise; their variance, computed as
    E[x^2] - E[x]^2, used to cancel below zero and whiten to NaN, which trained every weight of a
    2-step PPO run into NaN (refused by the load check above)."""
    from deepretrieval.rl.advantages import masked_whiten
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 9.0]]), mask)[0].tolist() == \
        pytest.approx([-1.0, 0.0, 1.0, 0.0])             # mean 2, unbiased std 1, padding zeroed
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = -4.0 + 1e-6 * torch.randn(2, 6, generator=g)
        assert masked_whiten(x, torch.ones(2, 6)).isfinite().all()


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])

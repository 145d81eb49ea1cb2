"""TensorBoard event files hold exactly the scalars of metrics.jsonl (read back with tensorboard's
own EventAccumulator), also across a resume; W&B gets the same dict; a tracker asked for but not
installed is a clear error before any work."""
import importlib.machinery
import shutil
import sys
import types

import numpy as np
import pytest

from deepretrieval.rl import trackers
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
from deepretrieval.rl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit(run_dir, resume=False, **overrides):
    cfg = toy_config("grpo", **{"total_steps": 3, "prompts_per_step": 8, "tensorboard": True, **overrides})
    Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), run_dir, device="cpu").fit(resume=resume)


def _events(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_same(run_dir):
    rows = read_jsonl(run_dir / "metrics.jsonl")
    events = _events(run_dir)
    keys = {k for r in rows for k in r if k != "step"}
    assert set(events) == keys and {"reward/mean", "loss/policy", "groups/zero_variance"} <= keys
    for key in keys:
        want = [(r["step"], float(np.float32(r[key]))) for r in rows]    # TensorBoard keeps float32
        assert events[key] == want, key
    return rows


def test_event_files_hold_the_metrics(tmp_path):
    _fit(tmp_path)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    rows = _assert_same(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["reward/mean"] != rows[2]["reward/mean"]


def test_resume_purges_the_killed_runs_later_events(tmp_path):
    _fit(tmp_path, total_steps=2, checkpoint_every=1)
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000002")     # as if killed before saving it
    first = _events(tmp_path)["loss/policy"]
    _fit(tmp_path, resume=True, total_steps=3, checkpoint_every=1)
    rows = _assert_same(tmp_path)                                   # one event per step, step 2 anew
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert _events(tmp_path)["loss/policy"][0] == first[0]


def test_wandb_gets_the_metrics(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    _fit(tmp_path, total_steps=2, tensorboard=False, wandb_project="dr-test")
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert calls[0][0] == "init" and calls[0][1]["project"] == "dr-test"
    assert calls[0][1]["dir"] == str(tmp_path) and calls[0][1]["config"]["rl"]["total_steps"] == 2
    assert [c[1:] for c in calls[1:3]] == [(r["step"], {k: v for k, v in r.items() if k != "step"})
                                           for r in rows]
    assert calls[-1] == ("finish",) and not list(tmp_path.glob("events.out.tfevents.*"))


def test_missing_package_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'deepretrieval\[tensorboard\]'"):
        _fit(tmp_path)
    with pytest.raises(ImportError, match="wandb_project = 'p' needs the wandb package: pip install wandb"):
        _fit(tmp_path, tensorboard=False, wandb_project="p")
    assert not (tmp_path / "metrics.jsonl").exists()

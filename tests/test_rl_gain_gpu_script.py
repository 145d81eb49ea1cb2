"""scripts/rl_gain_gpu.sh without a GPU: PYTHON=echo makes each run write the bench.rl_gain command
it would start into its log, so the recipes' arguments and the RUN+KEY=VALUE overrides are checked."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rl_gain_gpu.sh"


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    return subprocess.run(["bash", "scripts/rl_gain_gpu.sh", *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": "echo"}, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_recipes_and_overrides(tmp_path):
    run_script(tmp_path, "3", "scifact_edit", "scifact_edit+rl.seed=1+rl.actor_optim.lr=2e-5", "sql_sft")
    logs = tmp_path / "runs" / "rl_gain"
    assert (logs / "scifact_edit.log").read_text().split() == [
        "-m", "bench.rl_gain", "--config", "configs/scifact_best_edit_smollm2.toml", "--name", "scifact_rl",
        "--minutes", "3", "--out", "runs/rl_gain/scifact_edit", "--cold-start", "best_edit"]
    seeded = (logs / "scifact_edit+rl.seed=1+rl.actor_optim.lr=2e-5.log").read_text().split()
    assert seeded[-4:] == ["--cold-start", "best_edit", "rl.seed=1", "rl.actor_optim.lr=2e-5"]
    assert seeded[seeded.index("--out") + 1] == "runs/rl_gain/scifact_edit+rl.seed=1+rl.actor_optim.lr=2e-5"
    assert (logs / "sql_sft.log").read_text().split()[3:6] == ["configs/spider_crossdb_smollm2.toml", "--name", "sql_rl"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_unknown_recipe_fails(tmp_path):
    done = run_script(tmp_path, "3", "scifact_nope+rl.seed=1")
    assert done.returncode == 2 and "unknown run scifact_nope" in done.stderr

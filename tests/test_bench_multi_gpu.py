"""The 1-vs-N comparison of bench/multi_gpu.py on synthetic curves: bf16-sized differences pass,
a wrong loss normalisation or different step-1 rollouts fail. (The distributed runs themselves
are tests/test_rl_distributed.py; `bash bench/multi_gpu.sh OUT --tiny` runs this bench on CPU.)"""
import copy
import math

import pytest

from bench.multi_gpu import equality_section, stop_count


def _run(world_size, precision="bf16"):
    steps = [{"step": i + 1, "loss": -0.05 * (i + 1), "grad_norm": 0.8 + 0.01 * i,
              "reward/mean": 0.1, "kl": 1e-4 * i, "sample_hashes": [f"h{i}{j}" for j in range(8)]}
             for i in range(4)]
    return {"world_size": world_size, "model": "m", "precision": precision, "init_checksum": 1.5,
            "case": {"steps": 4, "prompts": 2, "group_size": 4, "new_tokens": 8}, "steps": steps}


def test_equal_within_bf16_tolerance_passes():
    one, two = _run(1), _run(2)
    for r in two["steps"]:
        r["loss"] *= 1 + 3e-3          # about one bf16 ulp
        r["grad_norm"] *= 1 - 5e-3
    _, res = equality_section(one, two)
    assert res["pass"] and res["identical_rollouts"] == [1.0] * 4
    assert math.isclose(res["checks"]["grad_norm"]["max_rel"], 5e-3, rel_tol=1e-6)


def test_wrong_normalisation_fails():
    one, two = _run(1), _run(2)
    for r in two["steps"]:
        r["loss"] *= 2                 # e.g. the loss not divided by the global token count
    _, res = equality_section(one, two)
    assert not res["pass"] and not res["checks"]["loss"]["pass"]
    assert res["checks"]["grad_norm"]["pass"]


def test_different_first_rollouts_fail_and_fp32_is_strict():
    one, two = _run(1), _run(2)
    two["steps"][0]["sample_hashes"][3] = "other"
    lines, res = equality_section(one, two)
    assert not res["pass"] and res["identical_rollouts"][0] == 7 / 8
    assert any("FAIL" in line for line in lines)
    one, two = _run(1, "fp32"), _run(2, "fp32")
    two = copy.deepcopy(two)
    two["steps"][2]["grad_norm"] *= 1 + 3e-3   # fine in bf16, too much in fp32
    assert not equality_section(one, two)[1]["pass"]


def test_stop_count_gives_about_half_early_stops():
    n = stop_count(151936, 128)
    assert 1 - (1 - n / 151936) ** 128 == pytest.approx(0.5, abs=0.01)

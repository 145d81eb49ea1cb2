"""bench/stopped_rows.py on the CPU: a row's useful tokens end at its first stop token, and one
small eval case through the whole benchmark, where stopped rows leaving the batch, keeping them,
and transformers' `generate` decode the same greedy tokens."""
import pytest

from bench import stopped_rows


def test_useful_tokens_end_at_the_first_stop():
    assert stopped_rows.useful_tokens([[5, 2, 7, 2], [5, 6], [2]], {2, 9}) == [[5, 2], [5, 6], [2]]


def test_eval_case_decodes_the_same_tokens_three_ways(monkeypatch):
    pytest.importorskip("transformers", reason="transformers is the benchmark's reference (a test dependency)")
    records = []
    monkeypatch.setattr(stopped_rows, "append_result", lambda name, record: records.append((name, record)))
    stopped_rows.main(["--cases", "eval", "--claims", "2", "--group", "1", "--new-tokens", "32", "--repeats", "1"])
    (name, r), = records
    assert name == "stopped_rows" and r["case"] == "eval" and r["rows"] == 2
    assert r["rows_keep_equal_transformers"] == 2 and r["rows_compact_equal_keep"] == 2
    assert r["compact_tokens"] == r["keep_tokens"] == r["transformers_tokens"] > 0
    assert 0 < r["length_mean"] <= r["length_max"] <= 32

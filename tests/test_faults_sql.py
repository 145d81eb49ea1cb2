"""Fault injection on the SQL path: hostile model SQL and dead workers never crash a run or lose a
result, and every limit holds (wall clock, memory). After every test the built-in Spider
databases' sha256 digests are checked against the ones taken when the module started."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from deepretrieval.cli import main
from deepretrieval.sqlexec import pool as pool_module
from deepretrieval.sqlexec.outcome import Status, evaluate_prediction
from deepretrieval.sqlexec.pool import SqlItem, SqlPool
from deepretrieval.sqlexec.sandbox import Limits, SqlRefused, SqlTimeout, execute
from deepretrieval.tasks.text_to_sql import TextToSQLTask

COUNT = "SELECT count(*) FROM city"                 # world_1: 4,079 cities
FIRST = "SELECT Name FROM city WHERE ID = 1"         # Kabul
NEVER_ENDS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
# One sqlite step (a naive substring search: every one of 2 M positions compares a 2 MB needle)
# that never returns to the progress handler: about a minute on a 2-core Zen 4.
ONE_LONG_STEP = "SELECT instr(hex(zeroblob(2000000)), hex(zeroblob(1000000)) || '1')"
SLACK_S = 1.5   # scheduling slack on a shared 2-core machine


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def spider_digests(spider_dir):
    return {p: sha256(p) for p in sorted((spider_dir / "database").glob("*/*.sqlite"))}


@pytest.fixture(autouse=True)
def spider_databases_unchanged(spider_digests):
    yield
    assert {p: sha256(p) for p in spider_digests} == spider_digests, "a Spider database file changed"


@pytest.fixture(scope="module")
def world(spider_dir):
    return str(spider_dir / "database" / "world_1" / "world_1.sqlite")


@pytest.fixture
def mini_spider(spider_dir, tmp_path):
    """A Spider folder with 6 dev examples on two databases (copies: the layout is ours)."""
    root = tmp_path / "spider"
    dbs = ("pets_1", "world_1")
    tables = [t for t in json.loads((spider_dir / "tables.json").read_text()) if t["db_id"] in dbs]
    dev = json.loads((spider_dir / "dev.json").read_text())
    examples = [e for db in dbs for e in [x for x in dev if x["db_id"] == db][:3]]
    for db in dbs:
        (root / "database" / db).mkdir(parents=True)
        shutil.copyfile(spider_dir / "database" / db / f"{db}.sqlite", root / "database" / db / f"{db}.sqlite")
    (root / "tables.json").write_text(json.dumps(tables))
    (root / "dev.json").write_text(json.dumps(examples))
    return root


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])       # utime + stime


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def kill_the_busy_worker(pool: SqlPool) -> int:
    """SIGKILL the one worker that is using CPU (the others idle in a read); its pid."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = {pid: cpu_ticks(pid) for pid in pool.pids}
        time.sleep(0.3)
        busy = [pid for pid, ticks in before.items() if cpu_ticks(pid) - ticks >= 10]
        if len(busy) == 1:
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
    raise AssertionError("no single busy worker to kill")


def evaluate_in_thread(pool: SqlPool, items: list[SqlItem]):
    result: list = []
    thread = threading.Thread(target=lambda: result.extend(pool.evaluate(items)))
    thread.start()
    return thread, result


# ---- 1: text sqlite cannot take ----------------------------------------------------------
def test_lone_surrogate_and_non_text_are_per_example_errors(world):
    with pytest.raises(SqlRefused, match="not valid Unicode text: surrogates not allowed at character 8"):
        execute(world, "SELECT '\udc80'")
    with pytest.raises(SqlRefused, match="SQL must be text, got int"):
        execute(world, 5)
    outcome = evaluate_prediction(world, "SELECT '\udc80' FROM city", COUNT)
    assert outcome.status is Status.PRED_ERROR and "not valid Unicode" in outcome.message
    with SqlPool(workers=1) as pool:   # pickled to a worker and back
        statuses = [o.status for o in pool.evaluate([SqlItem(world, "SELECT '\udc80'", COUNT),
                                                     SqlItem(world, COUNT, COUNT)])]
    assert statuses == [Status.PRED_ERROR, Status.MATCH]


def test_reward_of_a_surrogate_answer_is_wrong_not_a_crash(mini_spider):
    task = TextToSQLTask.from_dataset(mini_spider, "spider", split_map={"test": "dev"})
    try:
        prompt = task.prompts("test")[0]
        gold = task.split_examples("test")[0]["gold_sql"]
        answers = [json.dumps({"sql": gold}), json.dumps({"sql": "SELECT '\udc80'"}),   # "\\udc80" in the JSON
                   '{"sql": "SELECT \'\udc80\'"}']                                     # the character itself
        completions = [f"Counting.\n</think>\n<answer>{a}</answer>" for a in answers]
        rewards, details = task.reward([prompt] * 3, completions)
    finally:
        task.close()
    assert [d["status"] for d in details] == ["match", "pred_error", "pred_error"]
    assert rewards[0] > 1.0 and rewards[1:] == [0.0, 0.0]
    assert all("not valid Unicode" in d["message"] for d in details[1:])


def test_eval_sql_records_a_surrogate_as_pred_error(mini_spider, tmp_path, capsys):
    examples = json.loads((mini_spider / "dev.json").read_text())
    sqls = [e["query"] for e in examples]
    sqls[1] = "SELECT '\udc80'"
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"sql": s}) + "\n" for s in sqls))
    details = tmp_path / "details.jsonl"
    assert main(["eval-sql", "--data", str(mini_spider), "--format", "spider", "--predictions", str(preds),
                 "--workers", "1", "--details", str(details), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["evaluated"], summary["correct"], summary["pred_error"]) == (6, 5, 1)
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    assert rows[1]["status"] == "pred_error" and "not valid Unicode" in rows[1]["message"]


# ---- 2: a hard wall clock ----------------------------------------------------------------
def test_one_long_sqlite_step_defeats_the_progress_handler(world):
    """Why the pool needs a hard limit: in-process, such a query overshoots its limit 10x and more,
    and as no VM instruction follows the long one, its result even comes back as if in time."""
    limits = Limits(timeout_s=0.01)
    start = time.monotonic()
    assert execute(world, "SELECT instr(hex(zeroblob(300000)), hex(zeroblob(150000)) || '1')", limits) == [(0,)]
    assert time.monotonic() - start > 10 * limits.timeout_s
    with pytest.raises(SqlTimeout):    # the ordinary runaway, for contrast, stops at its limit
        execute(world, NEVER_ENDS, limits)


def test_a_query_past_its_time_limit_is_killed_and_the_pool_goes_on(world):
    limits = Limits(timeout_s=0.5, kill_grace_s=0.5)
    items = [SqlItem(world, COUNT, COUNT), SqlItem(world, ONE_LONG_STEP, COUNT), SqlItem(world, "SELECT 4079", COUNT),
             SqlItem(world, FIRST, ONE_LONG_STEP), SqlItem(world, COUNT, ONE_LONG_STEP),   # the gold query hangs
             SqlItem(world, FIRST, FIRST)]
    with SqlPool(workers=2, limits=limits) as pool:
        pool.evaluate(items[:1])                       # workers started
        pids = set(pool.pids)
        start = time.monotonic()
        outcomes = pool.evaluate(items)
        elapsed = time.monotonic() - start
        assert [o.status for o in outcomes] == [Status.MATCH, Status.PRED_TIMEOUT, Status.MATCH,
                                                Status.GOLD_TIMEOUT, Status.GOLD_TIMEOUT, Status.MATCH]
        assert "killed after the 0.5 s time limit (+0.5 s grace)" in outcomes[1].message
        assert outcomes[3].message.startswith("gold query: killed after the 0.5 s time limit")
        # both hangs ran at once, on the two workers; each was stopped close to 1 s
        assert elapsed < limits.timeout_s + limits.kill_grace_s + SLACK_S
        assert all(limits.timeout_s + limits.kill_grace_s <= o.seconds < 2.5 for o in outcomes[1:2] + outcomes[3:5])
        assert len(set(pool.pids) - pids) == 2          # both killed workers were replaced
        assert all(o.correct for o in pool.evaluate([SqlItem(world, COUNT, COUNT)] * 4))


def test_threads_share_one_pool_while_a_query_hangs(world):
    """A reward pool scores slices of a batch from several threads at once through one SqlPool."""
    limits = Limits(timeout_s=0.5, kill_grace_s=0.5)
    batches = [[SqlItem(world, COUNT, COUNT), SqlItem(world, f"SELECT {n}", COUNT)] for n in (4079, 1, 4079)]
    batches.append([SqlItem(world, ONE_LONG_STEP, COUNT), SqlItem(world, FIRST, FIRST)])
    with SqlPool(workers=2, limits=limits) as pool:
        start = time.monotonic()
        runs = [evaluate_in_thread(pool, batch) for batch in batches]
        for thread, _ in runs:
            thread.join(timeout=20)
        elapsed = time.monotonic() - start
    assert [[o.status.value for o in outcomes] for _, outcomes in runs] == [
        ["match", "match"], ["match", "mismatch"], ["match", "match"], ["pred_timeout", "match"]]
    assert elapsed < limits.timeout_s + limits.kill_grace_s + SLACK_S + 1.0   # + the workers' start


# ---- 3: memory caps ----------------------------------------------------------------------
def test_byte_cap_bounds_a_workers_memory(world):
    """4,079 rows of 1 MB: before, all 1,024 rows of the first fetch were in memory (1 GB). Two such
    predictions of one group run one after the other: the first's rows are gone when the second runs."""
    limits = Limits()                                   # 256 MiB of rows
    hog = SqlItem(world, "SELECT zeroblob(1000000) FROM city", COUNT)
    with SqlPool(workers=1, limits=limits) as pool:
        assert pool.evaluate([SqlItem(world, COUNT, COUNT)])[0].correct
        pid = pool.pids[0]
        before = peak_rss(pid)
        outcomes = pool.evaluate([hog, hog])
        grown = peak_rss(pid) - before
        assert pool.pids == [pid]
    assert all(o.status is Status.PRED_ERROR and "byte cap" in o.message for o in outcomes)
    assert 0.9 * limits.max_bytes < grown < limits.max_bytes + 32 * 2**20, grown


def test_out_of_memory_is_labelled_and_the_worker_survives(world):
    limits = Limits(max_bytes=2**31, memory_bytes=192 * 2**20)   # the byte cap would come too late
    with SqlPool(workers=1, limits=limits) as pool:
        assert pool.evaluate([SqlItem(world, COUNT, COUNT)])[0].correct
        pid = pool.pids[0]
        before = peak_rss(pid)
        outcome, ok = pool.evaluate([SqlItem(world, "SELECT zeroblob(1000000) FROM city", COUNT),
                                     SqlItem(world, FIRST, FIRST)])
        grown = peak_rss(pid) - before
        assert pool.pids == [pid] and ok.correct
    assert outcome.status is Status.PRED_ERROR
    assert outcome.message.startswith("out of memory:")
    assert "this worker process's memory cap of 201326592 bytes" in outcome.message
    assert grown < limits.memory_bytes, grown


# ---- 4: a worker killed with SIGKILL -----------------------------------------------------
def test_sigkill_of_a_worker_costs_one_query(world):
    items = [SqlItem(world, COUNT, COUNT), SqlItem(world, NEVER_ENDS, COUNT), SqlItem(world, "SELECT 4079", COUNT),
             SqlItem(world, "SELECT 1", COUNT)] + [SqlItem(world, FIRST, FIRST)] * 3
    with SqlPool(workers=2, limits=Limits(timeout_s=30)) as pool:
        pool.evaluate(items[:1])
        thread, outcomes = evaluate_in_thread(pool, items)
        killed = kill_the_busy_worker(pool)
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert [o.status for o in outcomes] == [Status.MATCH, Status.PRED_ERROR, Status.MATCH, Status.MISMATCH,
                                                Status.MATCH, Status.MATCH, Status.MATCH]
        assert outcomes[1].message == ("the worker process died while running it (killed by SIGKILL, e.g. by the "
                                       "out-of-memory killer) and was replaced")
        assert killed not in pool.pids and len(pool.pids) == 2
        assert all(o.correct for o in pool.evaluate(items[:1] + items[2:3]))


def test_sigkill_during_the_gold_query_is_a_gold_error_for_its_group(world):
    items = [SqlItem(world, COUNT, NEVER_ENDS), SqlItem(world, FIRST, NEVER_ENDS), SqlItem(world, FIRST, FIRST)]
    with SqlPool(workers=2, limits=Limits(timeout_s=30)) as pool:
        pool.evaluate(items[2:])
        thread, outcomes = evaluate_in_thread(pool, items)
        kill_the_busy_worker(pool)
        thread.join(timeout=20)
    assert [o.status for o in outcomes] == [Status.GOLD_ERROR, Status.GOLD_ERROR, Status.MATCH]
    assert outcomes[0].message.startswith("gold query: the worker process died while running it (killed by SIGKILL")
    assert outcomes[0].gold_problem


def test_workers_killed_while_idle_are_replaced(world):
    with SqlPool(workers=2) as pool:
        pool.evaluate([SqlItem(world, COUNT, COUNT)])
        for pid in pool.pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert all(o.correct for o in pool.evaluate([SqlItem(world, COUNT, COUNT), SqlItem(world, FIRST, FIRST)] * 3))


def test_workers_that_cannot_start_fail_the_batch_instead_of_looping(world, monkeypatch):
    # a forked worker inherits the patch and exits before its first query, again and again
    monkeypatch.setattr(pool_module, "cap_memory", lambda extra_bytes: os._exit(3))
    with SqlPool(workers=1, start_method="fork") as pool:
        with pytest.raises(RuntimeError, match=r"keep dying before their first query \(exit code 3"):
            pool.evaluate([SqlItem(world, COUNT, COUNT)])
        with pytest.raises(RuntimeError, match="SqlPool is closed"):
            pool.evaluate([SqlItem(world, COUNT, COUNT)])


# ---- 5: a predictions file that is not UTF-8 ---------------------------------------------
def test_eval_sql_names_the_line_with_a_non_utf8_byte(mini_spider, tmp_path):
    preds = tmp_path / "preds.sql"
    preds.write_bytes(b"SELECT 1\nSELECT 2\nSELECT 'caf\xe9'\nSELECT 4\nSELECT 5\nSELECT 6\n")
    with pytest.raises(SystemExit, match=r"preds.sql line 3 is not UTF-8 \(byte 0xe9 at byte 12 of the line\); "
                                         "save the predictions as UTF-8"):
        main(["eval-sql", "--data", str(mini_spider), "--format", "spider", "--predictions", str(preds)])


def test_eval_sql_finishes_with_a_summary_despite_hostile_predictions(mini_spider, tmp_path, capsys):
    examples = json.loads((mini_spider / "dev.json").read_text())
    sqls = [e["query"] for e in examples]
    sqls[0], sqls[4] = ONE_LONG_STEP, "SELECT zeroblob(1000000000)"
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"sql": s}) + "\n" for s in sqls))
    start = time.monotonic()
    assert main(["eval-sql", "--data", str(mini_spider), "--format", "spider", "--predictions", str(preds),
                 "--workers", "2", "--timeout", "0.5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["correct"], summary["pred_timeout"], summary["pred_error"]) == (4, 1, 1)
    assert time.monotonic() - start < 0.5 + Limits().kill_grace_s + 2 * SLACK_S

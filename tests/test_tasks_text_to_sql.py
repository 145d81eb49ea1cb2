"""Text-to-SQL rewards executed on real Spider databases (and a BIRD-layout copy of one)."""
import json
import shutil

import pytest

from deepretrieval.tasks.text_to_sql import TextToSQLTask


def sql_answer(sql: str) -> str:
    return "The question asks for a count.\n</think>\n<answer>%s</answer>" % json.dumps({"sql": sql})


@pytest.fixture(scope="module")
def spider_task(spider_dir):
    task = TextToSQLTask.from_dataset(spider_dir, "spider", split_map={"test": "dev"})
    yield task
    task.close()


def test_examples_schema_and_skipped_database(spider_task):
    exs = spider_task.split_examples("test")
    assert len(exs) == 1034 - 62 and len(spider_task.skipped) == 62          # wta_1 is not shipped
    assert all("wta_1" in s for s in spider_task.skipped)
    p = spider_task.prompts("test")[0]
    user = p.messages[1]["content"]
    assert user.startswith("\nYou are a SQL query writing expert.") and "CREATE TABLE" in user
    assert "External Knowledge" not in user.split("Note:")[0]                 # Spider has no evidence
    assert user.endswith("Here's the user query:\n" + exs[0]["input"])
    assert p.assistant_prefix == "Let me write the SQL query with reasoning. \n<think>\n"


def test_spider_rewards(spider_task):
    exs = spider_task.split_examples("test")
    prompts = spider_task.prompts("test")
    p0, gold0 = prompts[0], exs[0]["gold_sql"]            # SELECT count(*) FROM singer
    cases = [
        (sql_answer(gold0), 1.1),
        (sql_answer("SELECT COUNT(*) FROM singer WHERE 1"), 1.1),       # different text, same rows
        (sql_answer("SELECT count(*) FROM singer WHERE Age > 40"), 0.0),   # runs, wrong rows
        (sql_answer("SELEC count(*) FROM singer"), 0.0),                # sqlite error
        (sql_answer("DROP TABLE singer"), 0.0),                         # refused by the sandbox
        (sql_answer("SELECT 1; DELETE FROM singer"), 0.0),
        (sql_answer(""), -2.0),                                         # empty SQL: bad format
        ('x</think><answer>{"query": "SELECT count(*) FROM singer"}</answer>', -2.0),
        ("SELECT count(*) FROM singer", -2.0),                          # no tags
        ('x</think><answer>{"sql": "SELECT 1"}</answer><answer>{"sql": "SELECT 1"}</answer>', -2.0),
        ("x</think><answer>{'sql': 'SELECT 1'}</answer>", -2.0),        # not JSON
    ]
    rewards, details = spider_task.reward([p0] * len(cases), [c for c, _ in cases])
    assert rewards == pytest.approx([r for _, r in cases])
    assert details[0]["status"] == "match" and details[2]["status"] == "mismatch"
    assert details[3]["status"] == "pred_error" and "syntax" in details[3]["message"]
    assert details[4]["status"] == "pred_error"


def test_spider_evaluate_gold_is_exact(spider_task):
    exs = spider_task.split_examples("test")
    golds = [ex["gold_sql"] for ex in exs]
    queries = golds[:40] + [None] * (len(exs) - 40)
    res = spider_task.evaluate(queries, "test")
    assert res["exec_acc"] == pytest.approx(40 / len(exs)) and res["unanswered"] == len(exs) - 40
    assert res["skipped_missing_db"] == 62.0


@pytest.fixture
def bird_dir(tmp_path, spider_dir):
    db = tmp_path / "dev_databases" / "concert_singer"
    db.mkdir(parents=True)
    shutil.copy(spider_dir / "database" / "concert_singer" / "concert_singer.sqlite", db)
    (tmp_path / "dev.json").write_text(json.dumps([
        {"db_id": "concert_singer", "question": "Names of all singers?", "evidence": "singer = performer",
         "SQL": "SELECT Name FROM singer"},
        {"db_id": "concert_singer", "question": "Broken gold?", "evidence": "", "SQL": "SELECT nope FROM singer"}]))
    return tmp_path


def test_bird_partial_credit(bird_dir):
    task = TextToSQLTask.from_dataset(bird_dir, "bird", split_map={"test": "dev"}, reward="row_recall")
    p = task.prompts("test")[0]
    assert "CREATE TABLE" in p.messages[1]["content"]
    assert "\nExternal Knowledge: singer = performer\nNote: Using valid SQLite" in p.messages[1]["content"]
    cases = [
        ("SELECT Name FROM singer", 2.1),                          # exact: 0.1 + 1 + recall 1
        ("SELECT Name FROM singer WHERE Age > 40", 0.1 + 3 / 6),    # 3 of the 6 gold rows
        ("SELECT Name FROM singer UNION ALL SELECT Name FROM singer", 2.1),   # BIRD compares sets
        ("SELECT Country FROM singer", 0.0),                       # no gold row
        ("SELECT Nme FROM singer", 0.0),                           # error
    ]
    rewards, details = task.reward([p] * len(cases), [sql_answer(s) for s, _ in cases])
    assert rewards == pytest.approx([r for _, r in cases])
    assert details[1]["row_recall"] == pytest.approx(0.5)
    broken = task.prompts("test")[1]                               # the gold query itself fails
    rewards, details = task.reward([broken], [sql_answer("SELECT nope FROM singer")])
    assert rewards == [0.0] and details[0]["gold_problem"] and details[0]["status"] == "gold_error"
    res = task.evaluate(["SELECT Name FROM singer", "SELECT nope FROM singer"], "test")
    assert res["exec_acc"] == 0.5 and res["gold_problems"] == 1.0
    task.close()


def test_registry_builds_spider(spider_dir):
    from deepretrieval.tasks.registry import TaskConfig, build_task
    task = build_task(TaskConfig(family="text_to_sql", data=str(spider_dir), split_map={"test": "dev"}, limit=3))
    assert len(task.prompts("test")) == 3 and task.answer_key == "sql"
    rewards, _ = task.reward(task.prompts("test"), [sql_answer(ex["gold_sql"]) for ex in task.split_examples("test")])
    assert rewards == pytest.approx([1.1, 1.1, 1.1])
    task.close()

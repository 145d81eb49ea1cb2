"""Our prompts, reward tiers and options against the reference implementation's own text and code.

The reference (pat-jj/DeepRetrieval, commit in tests/reference_deepretrieval.py) is copied there:
its prompt strings and its reward functions. docs/FIDELITY.md is the table these tests back.

    python -m pytest -q tests/test_tasks_fidelity.py
"""
from __future__ import annotations

import json
import math
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import reference_deepretrieval as ref

from deepretrieval.model.chat_template import render_chat
from deepretrieval.retrieval.metrics import ndcg_at_k
from deepretrieval.rl.rollout import render_prompt
from deepretrieval.run_config import load_config
from deepretrieval.tasks import prompts as P
from deepretrieval.tasks.classic_ir import ClassicIRTask, listed_ndcg_at_k
from deepretrieval.tasks.data_files import load_msmarco_subset, split_file
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.evidence_seeking import PENALTIES, RANK_TIERS, rank_reward
from deepretrieval.tasks.literature_search import FORMAT_BAD, FORMAT_OK, LiteratureSearchTask, recall_reward
from deepretrieval.tasks.registry import TaskConfig, build_task
from deepretrieval.tasks.text_to_sql import TextToSQLTask

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

QUERY_TEMPLATES = [name for name in ref.REFERENCE_PROMPTS if not name.startswith("sql_")]
SQL_CASES = {"sql_spider": None, "sql_bird": ref.KNOWLEDGE}      # reference name -> knowledge
TAILS = (P.OPEN_TAIL, P.CLOSED_TAIL, P.MSMARCO_BEIR_DENSE_TAIL)


def answer(query: str, key: str = "query") -> str:
    return "I think.\n</think>\n<answer>%s</answer>" % json.dumps({key: query})


def _prompt(name: str, frame: str):
    if name in SQL_CASES:
        return P.build_prompt("sql", ref.INPUT, schema=ref.SCHEMA, knowledge=SQL_CASES[name], frame=frame)
    return P.build_prompt(name, ref.INPUT, frame=frame)


# ---- prompts -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ref.REFERENCE_PROMPTS))
def test_raw_frame_is_the_reference_string(name):
    p = _prompt(name, "raw")
    assert p.messages is None and p.text == ref.REFERENCE_PROMPTS[name]
    assert p.text.endswith(p.assistant_prefix) and p.assistant_prefix.endswith("<think>\n")


@pytest.mark.parametrize("name", list(ref.REFERENCE_PROMPTS))
def test_chat_frame_holds_the_reference_texts(name):
    """System turn, user turn and pre-fill are the reference's texts: the reference string is
    head(system) + user + one of the three frame tails + the pre-fill."""
    p = _prompt(name, "chat")
    (system, user), reference = [m["content"] for m in p.messages], ref.REFERENCE_PROMPTS[name]
    head = system + "\n" if name == "ctgov" else f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
    assert reference.startswith(head + user)
    assert reference[len(head + user):] in {tail + p.assistant_prefix for tail in TAILS}
    assert user.startswith("\n") and user.endswith(ref.INPUT)


@pytest.mark.parametrize("name", ["msmarco_sparse", "msmarco_dense", "literature", "sql_spider", "sql_bird"])
def test_chatml_rendering_equals_the_reference_where_it_closes_the_user_turn(name):
    p = _prompt(name, "chat")
    assert render_chat(list(p.messages), "chatml", assistant_prefix=p.assistant_prefix) == ref.REFERENCE_PROMPTS[name]


# configs of the paper's experiments -> (prompt template, training NDCG depth where classic IR)
PAPER_CONFIGS = {
    "scifact_bm25": "scifact", "nfcorpus_bm25": "nfcorpus", "fever_bm25": "fever", "hotpotqa_bm25": "hotpotqa",
    "msmarco_beir_bm25": "msmarco_beir", "scifact_dense": "scifact_dense", "nfcorpus_dense": "nfcorpus_dense",
    "fever_dense": "fever_dense", "hotpotqa_dense": "hotpotqa_dense", "msmarco_beir_dense": "msmarco_beir_dense",
    **{f"msmarco_{d}_{m}": f"msmarco_{'sparse' if m == 'bm25' else 'dense'}"
       for d in ("health", "science", "tech") for m in ("bm25", "dense")},
    "nq": "evidence", "triviaqa": "evidence_tqa_squad", "squad": "evidence_tqa_squad",
    "pubmed": "literature", "ctgov": "ctgov", "spider": "sql", "bird": "sql",
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_configs_use_the_reference_prompt_and_reward_depth(name):
    task = load_config(CONFIG_DIR / f"{name}.toml").task
    assert task.resolved_template == PAPER_CONFIGS[name]
    if name in ref.TRAIN_TOP_K:
        assert (task.reward_k, task.recall_bonus) == (ref.TRAIN_TOP_K[name], 0.0)
    if task.family == "text_to_sql":
        assert task.sql_reward == "reference"
        assert task.sql_schema == ("schema_sql" if name == "spider" else "sqlite")


def test_raw_frame_through_the_task(scifact_dir):
    task = build_task(TaskConfig(family="classic_ir", data=str(scifact_dir), prompt_frame="raw", reward_k=50,
                                 engine=EngineConfig(kind="bm25", k1=1.2, b=0.75), limit=3))
    prompts, exs = task.prompts("train"), task.split_examples("train")
    claims = [ex["input"] for ex in exs]
    assert [p.text for p in prompts] == [ref.REFERENCE_PROMPTS["scifact"].replace(ref.INPUT, c) for c in claims]
    assert render_prompt(prompts[0], "chatml") == prompts[0].text     # the trainer tokenizes the string as is
    rewards = task.reward(prompts + prompts[:1], [answer(c) for c in claims] + ["no tags"]).rewards
    ranked = task._ranked(claims, 50)
    assert rewards == pytest.approx([ref.ir_total(True, ndcg_at_k(r, ex["qrels"], 50)) for r, ex in zip(ranked, exs)]
                                    + [-2.0])
    assert max(rewards) > 0.1


# ---- classic IR rewards --------------------------------------------------------------------
class RankedFake:
    """Retriever whose ranking for a query is the query's words."""

    def search(self, queries, k):
        return [[(d, 1.0) for d in q.split()[:k]] for q in queries]


def test_listed_ideal_is_the_reference_ndcg():
    rng = random.Random(0)
    for _ in range(300):
        docs = [f"d{i}" for i in range(30)]
        judged = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 12))}
        ranked = rng.sample(docs, rng.randint(0, 30))
        for k in (3, 10, 100):
            expected = ref.ndcg_at_k(ranked, list(judged), k, rel_scores=list(judged.values()))
            assert listed_ndcg_at_k(ranked, judged, k) == pytest.approx(expected, abs=1e-12)
    # Worked example: grades listed (1, 2), both retrieved best first. The reference divides by the
    # DCG of the listed order, 1 + 2/log2(3), and scores 1.163; sorted grades give exactly 1.
    task = ClassicIRTask({"train": [{"id": "q", "input": "x", "qrels": {"a": 1, "b": 2}}]}, RankedFake(),
                         reward_k=10, ideal="listed")
    rewards, details = task.reward(task.prompts("train"), [answer("b a")])
    assert details[0]["ndcg"] == pytest.approx((2 + 1 / math.log2(3)) / (1 + 2 / math.log2(3)))
    assert rewards[0] == pytest.approx(0.1 + 1.1632, abs=1e-4)
    ours = ClassicIRTask(task.examples, RankedFake(), reward_k=10)
    assert ours.reward(ours.prompts("train"), [answer("b a")]).details[0]["ndcg"] == pytest.approx(1.0)


def test_pair_unit_is_the_reference_scifact_reward():
    """scifact.py: one example per (claim, relevant doc); reward 0.1 + NDCG@50 of that doc alone."""
    task = ClassicIRTask({"train": [{"id": "q1", "input": "x", "qrels": {"d1": 1, "d2": 1, "d9": 0}}]},
                         RankedFake(), reward_k=50, unit="pair")
    prompts = task.prompts("train")
    assert [p.meta["id"] for p in prompts] == ["q1:d1", "q1:d2"]
    ranking = "z d2 y d1" + " w" * 50
    for query in (ranking, "d2 " + "w " * 60 + "d1", "nothing"):
        rewards, _ = task.reward(prompts, [answer(query)] * 2)
        for doc, r in zip(("d1", "d2"), rewards):
            assert r == pytest.approx(ref.ir_total(True, ref.ndcg_at_k(query.split(), doc, 50)))


def test_msmarco_subset_reward_is_binary_ndcg_at_10(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q?", "docs_id": [7, 3]}) + "\n")
    task = ClassicIRTask(load_msmarco_subset(tmp_path), RankedFake(), template="msmarco_sparse", reward_k=10)
    targets = ["7", "3"]
    for query in ("1 2 3 4 5 6 7", "3 7", "1 2 3 4 5 6 8 9 10 11 7", "none"):
        rewards, _ = task.reward(task.prompts("train"), [answer(query)])
        expected = ref.ndcg_at_k(query.split(), targets, 10, rel_scores=[1, 1])     # msmarco.py:179
        assert rewards[0] == pytest.approx(ref.ir_total(True, expected))


def test_scifact_evaluation_units_on_real_bm25(scifact_dir):
    """Both units evaluate the same ranking; the pair unit is the reference's NDCG@10, computed
    here from the ranking with the reference's own ndcg_at_k (src/eval/BM25/scifact.py)."""
    cfg = dict(family="classic_ir", data=str(scifact_dir), engine=EngineConfig(kind="bm25", k1=1.2, b=0.75))
    per_query = build_task(TaskConfig(**cfg))
    per_pair = ClassicIRTask(per_query.examples, per_query.retriever, unit="pair")
    test = per_query.split_examples("test")
    by_query = per_query.evaluate(per_query.raw_queries("test"), "test")
    by_pair = per_pair.evaluate(per_pair.raw_queries("test"), "test")
    ranked = dict(zip((ex["id"] for ex in test), per_query._ranked([ex["input"] for ex in test], 10)))
    expected = [ref.ndcg_at_k(ranked[ex["id"]], doc, 10) for ex in test for doc in ex["qrels"]]
    assert by_pair["n"] == len(expected) == 339 and by_query["n"] == 300
    assert by_pair["ndcg@10"] == pytest.approx(sum(expected) / len(expected))
    assert 0.67 <= by_query["ndcg@10"] <= 0.685 and 0.625 <= by_pair["ndcg@10"] <= 0.64, (by_query, by_pair)


# ---- evidence seeking and literature search tiers -----------------------------------------
@pytest.mark.parametrize("dataset", ["nq", "triviaqa", "squad"])
def test_evidence_tiers_are_the_references(dataset):
    miss, error = PENALTIES[dataset]
    assert (miss, error) == (ref.EVIDENCE_MISS[dataset], ref.EVIDENCE_ERROR[dataset])
    for rank in range(1, 3002):
        ours = rank_reward(rank if rank <= 3000 else None, miss)
        assert ours == ref.evidence_answer_score(rank, miss), rank
    assert [limit for limit, _ in RANK_TIERS] == [5, 20, 50, 100, 1000, 3000]


def test_literature_tiers_are_the_references():
    assert (FORMAT_OK, FORMAT_BAD) == ref.SEARCH_FORMAT
    recalls = [i / 2000 for i in range(2001)] + [n / d for d in range(1, 60) for n in range(d + 1)]
    for recall in recalls:
        assert recall_reward(recall) == ref.literature_answer_score(recall), recall


def test_ctgov_searches_without_a_date_limit_like_the_reference():
    class Backend:
        def __init__(self):
            self.dates = []

        def search(self, query, max_results=3000, max_date=None):
            self.dates.append(max_date)
            return ["t1"]

    ex = {"id": "r", "input": "P: x\n", "gold": ["t1"], "pub_date": "2019-05-04"}
    for date_limit, expected in ((True, "2019-05-04"), (False, None)):
        backend = Backend()
        task = LiteratureSearchTask({"train": [ex]}, backend, date_limit=date_limit)
        assert task.reward(task.prompts("train"), [answer("q")]).rewards == [6.0]
        assert backend.dates == [expected]


# ---- text-to-SQL ---------------------------------------------------------------------------
GOLD = "SELECT Name, Country FROM singer"
PREDICTIONS = [
    GOLD,
    "SELECT Country, Name FROM singer",                              # same rows, columns swapped
    GOLD + " UNION ALL " + GOLD,                                     # every row twice
    "SELECT Name, Country FROM singer WHERE Age > 40",               # a subset of the rows
    "SELECT Nme FROM singer",                                        # an SQL error
]


def _rows(db, sql):
    try:
        return sqlite3.connect(db).execute(sql).fetchall()
    except sqlite3.Error:
        return None


@pytest.fixture(scope="module")
def singer_db(spider_dir):
    return str(spider_dir / "database" / "concert_singer" / "concert_singer.sqlite")


@pytest.mark.parametrize("dataset", ["spider", "bird"])
def test_sql_reference_reward(singer_db, dataset):
    ex = {"id": "0", "input": "Names and countries?", "gold_sql": GOLD, "db_path": singer_db,
          "prompt_kwargs": {"schema": "CREATE TABLE singer (...)", "knowledge": None}}
    task = TextToSQLTask({"train": [ex]}, comparison=dataset)
    prompts = task.prompts("train") * len(PREDICTIONS)
    rewards = task.reward(prompts, [answer(s, "sql") for s in PREDICTIONS]).rewards
    gold_rows = _rows(singer_db, GOLD)
    expected = [ref.ir_total(True, ref.sql_answer_score(_rows(singer_db, s), gold_rows, dataset)) for s in PREDICTIONS]
    assert rewards == pytest.approx(expected)
    assert rewards == pytest.approx({"spider": [1.1, 0.0, 1.1, 0.0, 0.0], "bird": [1.1, 0.4, 1.1, 0.4, 0.0]}[dataset])
    # Evaluation keeps the benchmark's comparison: Spider's result_eq accepts the swapped columns
    # and rejects the doubled rows, which the reference's set comparison does the other way round.
    accuracy = [task.evaluate([s], "train")["exec_acc"] for s in PREDICTIONS]
    assert accuracy == {"spider": [1, 1, 0, 0, 0], "bird": [1, 0, 1, 0, 0]}[dataset]
    match = TextToSQLTask({"train": [ex]}, comparison=dataset, reward="match")
    assert match.reward(prompts, [answer(s, "sql") for s in PREDICTIONS]).rewards == \
        pytest.approx([1.1 * a for a in accuracy])
    task.close()
    match.close()


def test_spider_schema_sql_is_the_reference_schema_text(tmp_path, spider_dir):
    """spider.py generate_schema_prompt: schema.sql without the lines that mention 'insert', stripped."""
    shutil.copytree(spider_dir, tmp_path / "spider")
    db_dir = tmp_path / "spider" / "database" / "concert_singer"
    lines = ["PRAGMA foreign_keys = ON;\n", "CREATE TABLE singer (Singer_ID int, Name text);\n",
             'INSERT INTO singer VALUES (1, "Joe");\n', "insert into singer values (2, 'Ann');\n", "\n"]
    (db_dir / "schema.sql").write_text("".join(lines))
    task = TextToSQLTask.from_dataset(tmp_path / "spider", "spider", split_map={"test": "dev"}, schema="schema_sql")
    by_db = {ex["db_path"]: ex["prompt_kwargs"]["schema"] for ex in task.split_examples("test")}
    assert by_db[str(db_dir / "concert_singer.sqlite")] == \
        "PRAGMA foreign_keys = ON;\nCREATE TABLE singer (Singer_ID int, Name text);"
    other = next(s for db, s in by_db.items() if "concert_singer" not in db)
    assert other.startswith("CREATE TABLE")                 # no schema.sql here: the CREATE statements
    with pytest.raises(ValueError, match="schema_sql' with Spider"):
        TextToSQLTask.from_dataset(tmp_path / "spider", "bird", schema="schema_sql")
    task.close()


# ---- data files ----------------------------------------------------------------------------
def test_dev_file_is_the_validation_split(tmp_path):
    for name in ("train", "dev", "test"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"question": f"{name}?", "answers": ["a"]}) + "\n")
    assert split_file(tmp_path, "val") == tmp_path / "dev.jsonl"
    (tmp_path / "val.jsonl").write_text(json.dumps({"question": "val?", "answers": ["a"]}) + "\n")
    assert split_file(tmp_path, "val") == tmp_path / "val.jsonl"
    with pytest.raises(FileNotFoundError, match="val/dev"):
        split_file(tmp_path / "nowhere", "val")


def test_msmarco_subset_files_and_registry(tmp_path):
    data, corpus = tmp_path / "msmarco_tech", tmp_path / "passages"
    data.mkdir()
    corpus.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"question": f"gpu memory {i}", "docs_id": [i]}) + "\n"
                                              for i in range(3)))
    (data / "dev.jsonl").write_text("".join(json.dumps({"question": f"cpu cache {i}", "docs_id": [str(i), 9]}) + "\n"
                                            for i in range(105)))
    splits = load_msmarco_subset(data)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 101, 105]   # msmarco_sub.py:75-85
    assert splits["test"][4] == {"id": "4", "input": "cpu cache 4", "qrels": {"4": 1, "9": 1}}
    (corpus / "corpus.jsonl").write_text("".join(json.dumps({"_id": str(i), "title": "", "text": f"gpu memory {i}"})
                                                 + "\n" for i in range(10)))
    cfg = TaskConfig(family="classic_ir", dataset="msmarco_subset", data=str(data), template="msmarco_sparse",
                     reward_k=10, engine=EngineConfig(kind="bm25", corpus=str(corpus)))
    task = build_task(cfg)
    assert task.prompts("test")[0].messages[1]["content"].endswith("Here's the user query:\ncpu cache 0")
    with pytest.raises(ValueError, match="passage collection"):
        build_task(TaskConfig(family="classic_ir", dataset="msmarco_subset", data=str(data)))
    with pytest.raises(ValueError, match="example_unit"):
        TaskConfig(family="classic_ir", data="x", example_unit="doc")

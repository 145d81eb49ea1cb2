"""The task options the RL experiments use (bench/rl_gain.py, configs/*_smollm2*.toml), on the
built-in data: the answer-only format, query expansion, a validation split held out by hash, the
cross-database Spider split, literature search over a BEIR corpus, the OR-of-words rule, and the
per-example scores the bootstrap intervals need."""
import pytest

from deepretrieval.tasks.answer_parsing import check_format, parse_answer
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.literature_search import or_of_words
from deepretrieval.tasks.prompts import build_prompt
from deepretrieval.tasks.registry import TaskConfig, build_task


def test_answer_only_format_and_prefill():
    p = build_prompt("scifact", "Vitamin D prevents fractures.", reasoning=False)
    assert p.assistant_prefix == '<answer>{"query": "'
    user = p.messages[1]["content"]
    assert "<think>" not in user and 'For example, <answer>{"query": "...."}</answer>' in user
    assert user.rstrip().endswith("Vitamin D prevents fractures.") and "Boolean operators" in user
    assert check_format('<answer>{"query": "x"}</answer>', reasoning=False) == (True, "")
    assert check_format('<think>a</think><answer>{"query": "x"}</answer>', reasoning=False)[0] is False
    assert check_format('<answer>{"query": "x"}</answer>', reasoning=True)[0] is False
    parsed = parse_answer(p.assistant_prefix + 'vitamin D fracture"}</answer>', "query", reasoning=False)
    assert parsed.ok and parsed.value == "vitamin D fracture"
    assert not parse_answer(p.assistant_prefix + "vitamin D fracture", "query", reasoning=False).ok


@pytest.fixture(scope="module")
def scifact_bm25():
    def build(**options):
        return build_task(TaskConfig(family="classic_ir", data="builtin:scifact", template="scifact",
                                     engine=EngineConfig(kind="bm25"), **options))
    return build


def test_expansion_sends_the_claim_plus_the_answer(scifact_bm25):
    rewrite, expand = scifact_bm25(reasoning=False), scifact_bm25(reasoning=False, query_mode="expand")
    prompts = expand.prompts("test")[:3]
    claims = expand.raw_queries("test")[:3]
    completions = ['fracture"}</answer>'] * 3
    assert expand.answers(prompts, completions) == [f"{c}\nfracture" for c in claims]
    assert rewrite.answers(prompts, completions) == ["fracture"] * 3
    # the reward scores what the engine was sent: the expansion keeps the claim, the rewrite loses it
    r_expand = expand.reward(prompts, completions).details
    r_rewrite = rewrite.reward(prompts, completions).details
    assert all(e["ndcg"] >= w["ndcg"] for e, w in zip(r_expand, r_rewrite))
    # a raw claim written as an answer scores the raw claim's NDCG@10 per example
    raw_rows = rewrite.evaluate(rewrite.raw_queries("test"), "test")
    assert len(raw_rows["per_example"]) == 300
    assert sum(raw_rows["per_example"]) / 300 == pytest.approx(raw_rows["ndcg@10"])
    assert 0.66 < raw_rows["ndcg@10"] < 0.68                      # flat BM25, k1 0.9 b 0.4: 0.671


def test_validation_held_out_by_hash(scifact_bm25):
    full, held = scifact_bm25(), scifact_bm25(val_fraction=0.2)
    train_ids = {ex["id"] for ex in full.examples["train"]}
    val_ids = {ex["id"] for ex in held.examples["val"]}
    assert val_ids and val_ids < train_ids and not val_ids & {ex["id"] for ex in held.examples["train"]}
    assert 0.15 < len(val_ids) / len(train_ids) < 0.25
    assert val_ids == {ex["id"] for ex in scifact_bm25(val_fraction=0.2).examples["val"]}   # fixed
    assert held.examples["test"] == full.examples["test"]
    with pytest.raises(ValueError, match="val_fraction"):
        TaskConfig(family="classic_ir", data="builtin:scifact", val_fraction=1.0)


def test_spider_split_by_database():
    task = build_task(TaskConfig(family="text_to_sql", data="builtin:spider", split_map={"test": "dev"},
                                 db_split=True, val_fraction=0.2, reasoning=False))
    try:
        dbs = {s: {ex["group"] for ex in task.examples[s]} for s in ("train", "val", "test")}
        assert not dbs["train"] & dbs["test"] and not dbs["val"] & dbs["test"] and not dbs["train"] & dbs["val"]
        assert len(dbs["train"] | dbs["val"]) == 10 and len(dbs["test"]) == 9 and "car_1" in dbs["test"]
        assert sum(len(task.examples[s]) for s in ("train", "val", "test")) == 972    # wta_1 skipped
        n = len(task.examples["test"])
        gold = [ex["gold_sql"] for ex in task.examples["test"][:5]] + [None] * (n - 5)
        result = task.evaluate(gold, "test")
        assert result["per_example"] == [1.0] * 5 + [0.0] * (n - 5)
    finally:
        task.close()
    with pytest.raises(ValueError, match="text-to-SQL option"):
        TaskConfig(family="classic_ir", data="builtin:scifact", db_split=True)


def test_literature_search_over_scifact_with_pubmed_syntax():
    task = build_task(TaskConfig(family="literature_search", dataset="beir", data="builtin:scifact", k=100,
                                 date_limit=False, engine=EngineConfig(kind="medline"), reasoning=False))
    assert task.template == "literature_claim" and task.headline == "recall@100"
    raw = task.raw_queries("test")
    assert len(raw) == 300
    claim = task.evaluate(raw, "test")["recall@100"]
    rule = task.evaluate([or_of_words(q) for q in raw], "test")["recall@100"]
    assert claim < 0.1 < 0.85 < rule          # the raw claim ANDs every word; OR finds most (0.049 / 0.919)
    prompts = task.prompts("test")
    answers = [raw[1], or_of_words(raw[1])]          # "1/2000 in UK have abnormal PrP positivity."
    result = task.reward([prompts[1]] * 2, [task.well_formed(prompts[1], a) for a in answers])
    assert [d["recall"] for d in result.details] == [0.0, 1.0]     # nothing when ANDed, all when ORed
    assert result.rewards == [1.0 - 3.5, 1.0 + 5.0]                # format + the paper's recall tiers


def test_or_of_words():
    assert or_of_words("TNF-α blocks (IL-6) in 50% of mice.") == "TNF OR α OR blocks OR IL OR 6 OR in OR 50 OR of OR mice"

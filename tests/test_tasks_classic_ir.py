"""Classic IR with a real BM25 index on SciFact."""
import pytest

from deepretrieval.retrieval.metrics import ndcg_at_k
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.registry import TaskConfig, build_task


@pytest.fixture(scope="module")
def scifact_task(scifact_dir):
    return build_task(TaskConfig(family="classic_ir", data=str(scifact_dir), template="scifact",
                                 engine=EngineConfig(kind="bm25", k1=0.9, b=0.4)))


def test_raw_query_ndcg_matches_published_bm25(scifact_task):
    queries = scifact_task.raw_queries("test")
    assert len(queries) == 300 and len(scifact_task.split_examples("train")) == 809
    res = scifact_task.evaluate(queries, "test")
    # bm25s (same variant and tokenisation) gives 0.676 here; BEIR 0.665, PyTerrier 0.684
    assert 0.665 <= res["ndcg@10"] <= 0.69, res
    assert res["recall@100"] > 0.85 and res["n"] == 300.0
    none = scifact_task.evaluate([None] * 300, "test")
    assert none["ndcg@10"] == 0.0 and none["unanswered"] == 300.0


def test_reward_is_point_one_plus_ndcg_at_1000(scifact_task):
    prompts = scifact_task.prompts("train")[:4]
    exs = scifact_task.split_examples("train")[:4]
    claims = [ex["input"] for ex in exs]
    completions = ['Looking at the claim.\n</think>\n<answer>{"query": %s}</answer>' % __import__("json").dumps(c)
                   for c in claims]
    rewards, details = scifact_task.reward(prompts, completions)
    ranked = [[d for d, _ in hits] for hits in scifact_task.retriever.search(claims, k=1000)]
    for r, d, ex, rk in zip(rewards, details, exs, ranked):
        expected = ndcg_at_k(rk, ex["qrels"], 1000)
        assert d["ndcg"] == pytest.approx(expected)
        assert r == pytest.approx(0.1 + expected if expected > 0 else 0.0)
    assert any(r > 0.1 for r in rewards)
    bad, _ = scifact_task.reward(prompts[:2], ["</think><answer>{\"query\": \"\"}</answer>", "plain text"])
    assert bad == [-2.0, -2.0]


def test_prompt_has_the_claim_and_the_papers_instruction(scifact_task):
    p = scifact_task.prompts("test")[0]
    user = p.messages[1]["content"]
    assert user.startswith("\nYou are a query generating expert. Given a scientific claim")   # scifact.py's newline
    assert user.endswith("Here's the scientific claim:\n" + scifact_task.raw_queries("test")[0])
    assert p.assistant_prefix == "Let me think step by step. \n<think>\n"

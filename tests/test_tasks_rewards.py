"""The paper's reward tiers at every boundary, and each family's reward on malformed outputs.

Engines here are small fakes with known answers, so each expected reward is exact; the real
engines (BM25 on SciFact, Spider databases) are in test_tasks_classic_ir.py / test_tasks_text_to_sql.py.
"""
import pytest

from deepretrieval.tasks.classic_ir import ClassicIRTask, ir_reward
from deepretrieval.tasks.evidence_seeking import EvidenceSeekingTask, rank_reward
from deepretrieval.tasks.literature_search import LiteratureSearchTask, recall_reward

EPS = 1e-9


# ---- literature search: recall tiers -----------------------------------------------------
@pytest.mark.parametrize("threshold, at, below", [
    (0.7, 5.0, 4.0), (0.5, 4.0, 3.0), (0.4, 3.0, 1.0), (0.3, 1.0, 0.5), (0.1, 0.5, 0.1), (0.05, 0.1, -3.5)])
def test_recall_tiers_at_every_boundary(threshold, at, below):
    assert recall_reward(threshold - EPS) == below
    assert recall_reward(threshold) == at
    assert recall_reward(threshold + EPS) == at


def test_recall_tiers_ends_and_exact_fractions():
    assert recall_reward(1.0) == 5.0 and recall_reward(0.0) == -3.5
    assert recall_reward(7 / 10) == 5.0 and recall_reward(3 / 10) == 1.0 and recall_reward(1 / 20) == 0.1


# ---- evidence seeking: rank tiers ----------------------------------------------------------
@pytest.mark.parametrize("limit, at, above", [
    (5, 5.0, 4.0), (20, 4.0, 2.0), (50, 2.0, 1.0), (100, 1.0, 0.5), (1000, 0.5, 0.1), (3000, 0.1, -3.5)])
def test_rank_tiers_at_every_boundary(limit, at, above):
    assert rank_reward(limit - 1) == at
    assert rank_reward(limit) == at
    assert rank_reward(limit + 1) == above


def test_rank_tiers_none_and_squad_penalty():
    assert rank_reward(1) == 5.0
    assert rank_reward(None) == -3.5 and rank_reward(None, miss=-2.5) == -2.5
    assert rank_reward(3001, miss=-2.5) == -2.5


# ---- classic IR combination ----------------------------------------------------------------
def test_ir_reward_combination():
    assert ir_reward(True, 0.5) == pytest.approx(0.6)
    assert ir_reward(True, EPS) == pytest.approx(0.1 + EPS)
    assert ir_reward(True, 0.0) == 0.0
    assert ir_reward(False, 0.9) == -2.0


# ---- fakes ---------------------------------------------------------------------------------
def answer(q: str) -> str:
    return 'I think.\n</think>\n<answer>{"query": "%s"}</answer>' % q


MALFORMED = [
    "no tags at all",
    "x</think>",                                                         # no answer
    'x</think><answer>{"query": "a"}</answer><answer>{"query": "b"}</answer>',   # two answers
    'x</think><answer><answer>{"query": "a"}</answer></answer>',          # nested
    "<think>again</think><answer>{\"query\": \"a\"}</answer>",           # second think
]
BAD_ANSWER = [  # structure right, answer unusable
    'x</think><answer>{"query": oops}</answer>',
    'x</think><answer>{"query": ""}</answer>',
    'x</think><answer>{"sql": "SELECT * FROM papers"}</answer>',
    'x</think><answer>["a"]</answer>',
]


class FakeBackend:
    """query "hitN" returns the first N of ten gold ids; "boom" raises like an engine error."""
    def __init__(self):
        self.calls = []

    def search(self, query, max_results=3000, max_date=None):
        self.calls.append((query, max_date))
        if query == "boom":
            raise RuntimeError("engine down")
        n = int(query[3:]) if query.startswith("hit") else 0
        return [f"p{i}" for i in range(n)] + ["x1", "x2"]


def literature_task(backend):
    ex = {"id": "r1", "input": "P: adults\nI: drug\nC: placebo\nO: death\n",
          "gold": [f"p{i}" for i in range(10)], "pub_date": "2018/05/17"}
    return LiteratureSearchTask({"train": [ex]}, backend, workers=2)


def test_literature_reward_totals():
    backend = FakeBackend()
    task = literature_task(backend)
    prompts = task.prompts("train")
    comps = [answer("hit7"), answer("hit5"), answer("hit3"), answer("hit0"), answer("boom")] + MALFORMED + BAD_ANSWER
    rewards, details = task.reward(prompts * len(comps), comps)
    assert rewards[:5] == [6.0, 5.0, 2.0, -2.5, -3.0]
    assert rewards[5:5 + len(MALFORMED)] == [-4.0] * len(MALFORMED)
    assert rewards[5 + len(MALFORMED):] == [-3.0] * len(BAD_ANSWER)
    assert details[0]["recall"] == 0.7 and details[0]["n_returned"] == 9
    assert "engine down" in details[4]["error"]
    assert details[7]["reason"].startswith("<answer> appears 2 times")
    assert ("hit7", "2018/05/17") in backend.calls                   # date limit passed through


def test_literature_cache_and_evaluate():
    backend = FakeBackend()
    task = literature_task(backend)
    prompts = task.prompts("train")
    task.reward(prompts * 4, [answer("hit5")] * 4)
    assert len(backend.calls) == 1                                  # de-duplicated
    task.reward(prompts, [answer("hit5")])
    assert len(backend.calls) == 1                                  # cached
    assert task.evaluate(["hit5"], "train")["recall@3000"] == 0.5
    assert task.evaluate([None], "train")["recall@3000"] == 0.0
    with pytest.raises(ValueError, match="no 'test' split"):
        task.prompts("test")


def test_literature_prompt_is_the_papers():
    p = literature_task(FakeBackend()).prompts("train")[0]
    assert p.messages[0]["content"].startswith("A conversation between User and Assistant.")
    assert "P: adults\nI: drug" in p.messages[1]["content"]
    assert "The research is defined using the PICO framework" in p.messages[1]["content"]
    assert p.assistant_prefix.endswith("<think>\n") and p.meta == {"split": "train", "id": "r1"}


class FakeRetriever:
    """A batched engine: query "rankN" puts passage "ans" at rank N among 3,000 fillers."""
    def __init__(self):
        self.batches = []

    def search(self, queries, k):
        self.batches.append(list(queries))
        out = []
        for q in queries:
            ids = [f"f{i}" for i in range(k)]
            if q.startswith("rank"):
                ids.insert(int(q[4:]) - 1, "ans")
            out.append([(d, 1.0) for d in ids[:k]])
        return out


PASSAGES = {**{f"f{i}": f"Filler passage {i} about nothing." for i in range(3000)},
            "ans": "Title\nThe capital of France is Paris."}


@pytest.mark.parametrize("dataset, miss, error", [("nq", -3.5, -4.0), ("squad", -2.5, -3.0)])
def test_evidence_reward_totals(dataset, miss, error):
    task = EvidenceSeekingTask({"train": [{"id": "q", "input": "capital of france?", "answers": ["paris"]}]},
                               FakeRetriever(), PASSAGES, dataset=dataset)
    prompts = task.prompts("train")
    comps = [answer(f"rank{r}") for r in (5, 6, 20, 21, 50, 100, 1000, 3000)] + [answer("nothing")]
    rewards, details = task.reward(prompts * len(comps), comps)
    assert rewards == [6.0, 5.0, 5.0, 3.0, 3.0, 2.0, 1.5, 1.1, 1 + miss]
    assert [d["rank"] for d in details] == [5, 6, 20, 21, 50, 100, 1000, 3000, None]
    bad, _ = task.reward(prompts * (len(MALFORMED) + len(BAD_ANSWER)), MALFORMED + BAD_ANSWER)
    assert bad == [-4.0] * len(MALFORMED) + [1 + error] * len(BAD_ANSWER)
    ev = task.evaluate(["rank5"], "train")
    assert ev["hits@1"] == 0.0 and ev["hits@5"] == 1.0 and ev["hits@100"] == 1.0


def test_evidence_engine_called_once_per_distinct_query():
    retriever = FakeRetriever()
    task = EvidenceSeekingTask({"train": [{"id": "q", "input": "?", "answers": ["paris"]}]}, retriever, PASSAGES)
    task.reward(task.prompts("train") * 3, [answer("rank2"), answer("rank2"), answer("rank9")])
    assert retriever.batches == [["rank2", "rank9"]]


def test_classic_ir_reward_with_fake_retriever():
    qrels = {"ans": 2, "f0": 1}
    task = ClassicIRTask({"train": [{"id": "q", "input": "claim", "qrels": qrels}]}, FakeRetriever(),
                         reward_k=1000)
    prompts = task.prompts("train")
    rewards, details = task.reward(prompts * 3, [answer("rank1"), answer("nothing"), answer("rank2000")])
    # rank1: ans at 1 (gain 2), f0 at 2 (gain 1) -> ideal order -> NDCG 1
    assert rewards[0] == pytest.approx(1.1)
    # "nothing": f0 at rank 1 (gain 1), ans not retrieved: DCG 1 / IDCG (2 + 1/log2 3)
    assert details[1]["ndcg"] == pytest.approx(1 / (2 + 1 / 1.5849625007211562))
    assert rewards[1] == pytest.approx(0.1 + details[1]["ndcg"])
    assert rewards[2] == pytest.approx(0.1 + details[2]["ndcg"])     # ans beyond k=1000: only f0 counts
    bad, _ = task.reward(prompts * (len(MALFORMED) + len(BAD_ANSWER)), MALFORMED + BAD_ANSWER)
    assert bad == [-2.0] * (len(MALFORMED) + len(BAD_ANSWER))


def test_classic_ir_zero_ndcg_is_zero_and_recall_bonus():
    task = ClassicIRTask({"train": [{"id": "q", "input": "claim", "qrels": {"ans": 1}}]}, FakeRetriever(),
                         reward_k=10, recall_bonus=0.2)
    prompts = task.prompts("train")
    rewards, details = task.reward(prompts * 2, [answer("nothing"), answer("rank2")])
    assert rewards[0] == 0.0 and details[0]["ndcg"] == 0.0
    assert rewards[1] == pytest.approx(0.1 + 0.2 + 1 / 1.5849625007211562)


def test_rl_prompt_objects_work_like_task_prompts():
    from deepretrieval.rl.interfaces import Prompt, RewardResult
    task = literature_task(FakeBackend())
    p = task.prompts("train")[0]
    rl_prompt = Prompt(messages=p.messages, assistant_prefix=p.assistant_prefix, meta=p.meta)
    rewards, details = task.reward([rl_prompt, p], [answer("hit7"), None],
                                   split=["train", "train"], id=["r1", "r1"])   # rl's meta lists
    assert rewards == [6.0, -4.0] and "not a string" in details[1]["reason"]
    assert RewardResult(rewards, details).rewards == [6.0, -4.0]


def test_answers_and_limit():
    task = literature_task(FakeBackend())
    p = task.prompts("train")[0]
    assert task.answers([p, p], [answer("hit3"), "garbage"]) == ["hit3", None]
    task.examples["train"].append(dict(task.examples["train"][0], id="r2"))
    task.limit(1)
    assert [q.meta["id"] for q in task.prompts("train")] == ["r1"]

"""Literature search end to end on the offline MEDLINE backend (real records, PubMed query language)."""
import json

import pytest

from deepretrieval.retrieval.medline_backend import MedlineBackend
from deepretrieval.tasks.data_files import DataFormatError
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.literature_search import LiteratureSearchTask, load_reviews
from deepretrieval.tasks.registry import TaskConfig, build_task


def answer(q: str) -> str:
    return "Key concepts: the population and the drug.\n</think>\n<answer>%s</answer>" % json.dumps({"query": q})


@pytest.fixture(scope="module")
def backend():
    return MedlineBackend.builtin()


@pytest.fixture(scope="module")
def review_dir(tmp_path_factory, backend):
    folder = tmp_path_factory.mktemp("pubmed")
    gold = backend.search("cancer[tiab]", max_results=3000)[:10]
    rows = [{"pico": {"P": "adults with cancer", "I": "chemotherapy", "C": "placebo", "O": "survival"},
             "publication_pmids": gold, "pub_date": "2030/01/01"},
            {"pico": {"P": "p", "I": "i", "C": "c", "O": "o"}, "publication_pmids": gold, "pub_date": "1900"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the paper's parquet columns, here as jsonl: input / label / pub_date
    (folder / "test.jsonl").write_text(json.dumps({"input": "P: x\nI: y\nC: z\nO: w\n", "label": gold,
                                                   "pub_date": "2030"}) + "\n")
    return folder


def test_rewards_on_the_offline_backend(review_dir, backend):
    task = LiteratureSearchTask.from_files(review_dir, backend, workers=4)
    train = task.prompts("train")
    cases = [(train[0], answer("cancer[tiab]"), 6.0),                 # all 10 gold ids: recall 1
             (train[0], answer("zzzqqqxx[tiab]"), -2.5),              # nothing found: 1 - 3.5
             (train[0], answer("((cancer"), -3.0),                    # unparsable Boolean query
             (train[1], answer("cancer[tiab]"), -2.5),                # review dated 1900: nothing yet
             (train[0], "cancer[tiab]", -4.0)]                        # no tags
    rewards, details = task.reward([c[0] for c in cases], [c[1] for c in cases])
    assert rewards == [c[2] for c in cases]
    assert details[0]["recall"] == 1.0 and details[3]["recall"] == 0.0
    assert "QueryParseError" in details[2]["error"]
    assert task.evaluate(["cancer[tiab]"], "test") == {"recall@3000": 1.0, "per_example": [1.0],
                                                       "engine_errors": 0.0, "unanswered": 0.0, "n": 1.0}
    assert task.raw_queries("test") == ["P: x\nI: y\nC: z\nO: w\n"]


def test_registry_builds_the_offline_task(review_dir):
    task = build_task(TaskConfig(family="literature_search", data=str(review_dir),
                                 engine=EngineConfig(kind="medline")))
    assert len(task.prompts("train")) == 2 and task.k == 3000
    assert task.prompts("train")[0].messages[1]["content"].endswith(
        "User: The research is defined by the following PICO:\nP: adults with cancer\nI: chemotherapy\n"
        "C: placebo\nO: survival\n")         # convert_dict_to_str's last newline, kept as the reference keeps it


def test_review_file_errors_name_the_record(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"pico": {"P": "x"}, "trial_nctids": ["NCT1"]}\n')
    assert load_reviews(tmp_path / "ok.jsonl", "trial_nctids")[0]["gold"] == ["NCT1"]
    (tmp_path / "a.jsonl").write_text('{"pico": {"P": "x"}, "trial_nctids": ["NCT1"]}\n{"pico": {"P": "y"}}\n')
    with pytest.raises(DataFormatError, match="a.jsonl record 2: record has none of the fields"):
        load_reviews(tmp_path / "a.jsonl", "trial_nctids")
    (tmp_path / "b.jsonl").write_text('{"pico": {"P": "x"}, "publication_pmids": []}\n')
    with pytest.raises(DataFormatError, match="non-empty list"):
        load_reviews(tmp_path / "b.jsonl", "publication_pmids")
    (tmp_path / "c.jsonl").write_text('{"pico": \n')
    with pytest.raises(DataFormatError, match="c.jsonl:1: not a JSON line"):
        load_reviews(tmp_path / "c.jsonl", "publication_pmids")

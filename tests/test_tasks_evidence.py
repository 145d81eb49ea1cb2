"""Evidence seeking: DPR-style data files, and the rank reward with a real BM25 index over real passages."""
import csv
import json

import pytest

from deepretrieval.tasks.answer_match import has_answer
from deepretrieval.tasks.data_files import DataFormatError
from deepretrieval.tasks.engines import EngineConfig
from deepretrieval.tasks.evidence_seeking import load_passages, load_questions, rank_reward
from deepretrieval.tasks.registry import TaskConfig, build_task


def test_dpr_qa_formats(tmp_path):
    (tmp_path / "nq-test.qa.csv").write_text("who wrote hamlet\t['Shakespeare', 'William Shakespeare']\n"
                                             "capital of france?\t[\"Paris\"]\n")
    rows = load_questions(tmp_path / "nq-test.qa.csv")
    assert rows[0] == {"id": "0", "input": "who wrote hamlet", "answers": ["Shakespeare", "William Shakespeare"]}
    assert rows[1]["answers"] == ["Paris"]
    (tmp_path / "nq-dev.json").write_text(json.dumps([{"question": "q?", "answers": ["a"], "positive_ctxs": []}]))
    assert load_questions(tmp_path / "nq-dev.json")[0]["answers"] == ["a"]
    (tmp_path / "squad.jsonl").write_text(json.dumps({"question": "q", "answers": "single"}) + "\n")
    assert load_questions(tmp_path / "squad.jsonl")[0]["answers"] == ["single"]
    (tmp_path / "bad.tsv").write_text("only a question\n")
    with pytest.raises(DataFormatError, match="bad.tsv:1: expected 'question<TAB>\\[answers\\]'"):
        load_questions(tmp_path / "bad.tsv")
    (tmp_path / "bad2.tsv").write_text("q\tnot a list(\n")
    with pytest.raises(DataFormatError, match="is not a list literal"):
        load_questions(tmp_path / "bad2.tsv")


@pytest.fixture(scope="module")
def evidence_setup(tmp_path_factory, scifact_dir):
    folder = tmp_path_factory.mktemp("evidence")
    docs = [json.loads(line) for line in open(scifact_dir / "corpus.jsonl")][:1500]
    with open(folder / "psgs_w100.tsv", "w", newline="") as f:        # DPR's layout: id, text, title
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "text", "title"])
        for d in docs:
            w.writerow([d["_id"], d["text"], d["title"]])
    questions = [{"question": d["title"], "answers": [" ".join(d["text"].split()[:4])]} for d in docs[:12:3]]
    (folder / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    task = build_task(TaskConfig(family="evidence_seeking", dataset="nq", data=str(folder),
                                 passages=str(folder / "psgs_w100.tsv"), engine=EngineConfig(kind="bm25")))
    return task, docs


def test_passages_tsv_and_jsonl_agree(evidence_setup, scifact_dir):
    task, docs = evidence_setup
    assert task.passages[docs[0]["_id"]] == docs[0]["title"] + "\n" + docs[0]["text"]
    ids, texts = load_passages(scifact_dir / "corpus.jsonl")
    assert ids[:1500] == [d["_id"] for d in docs] and texts[0] == task.passages[ids[0]]


def test_rank_reward_with_real_bm25(evidence_setup):
    task, _ = evidence_setup
    prompts = task.prompts("train")
    exs = task.split_examples("train")
    queries = [ex["input"] for ex in exs] + ["zzqx unrelated words"]
    completions = ["Use the title.\n</think>\n<answer>%s</answer>" % json.dumps({"query": q}) for q in queries]
    rewards, details = task.reward(prompts + prompts[:1], completions)
    hits = task.retriever.search(queries, k=3000)
    for i, (ex, ranked) in enumerate(zip(exs + exs[:1], hits)):
        expected = next((r for r, (d, _) in enumerate(ranked, 1) if has_answer(ex["answers"], task.passages[d])), None)
        assert details[i]["rank"] == expected
        assert rewards[i] == 1.0 + rank_reward(expected)
    assert all(d["rank"] is not None and d["rank"] <= 5 for d in details[:-1])     # the title finds its passage
    assert details[-1]["rank"] is None and rewards[-1] == -2.5
    ev = task.evaluate(task.raw_queries("train"), "train")
    assert ev["hits@5"] == 1.0 and ev["n"] == 4.0


def test_record_file_formats(tmp_path):
    import gzip

    from deepretrieval.tasks.data_files import read_records, split_file
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as f:
        f.write('{"question": "q", "answers": ["a"]}\n\n')
    assert read_records(tmp_path / "train.jsonl.gz") == [{"question": "q", "answers": ["a"]}]
    assert split_file(tmp_path, "train").name == "train.jsonl.gz"
    with pytest.raises(FileNotFoundError, match="no 'test' file"):
        split_file(tmp_path, "test")
    (tmp_path / "test.parquet").write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DataFormatError, match="reading parquet needs pyarrow"):
            read_records(tmp_path / "test.parquet")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataFormatError, match="unknown data format"):
        read_records(tmp_path / "x.xml")
    (tmp_path / "list.json").write_text('{"not": "a list"}')
    with pytest.raises(DataFormatError, match="expected a JSON list of objects"):
        read_records(tmp_path / "list.json")

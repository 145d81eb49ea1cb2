"""Fault injection on data loading (`deepretrieval eval`'s task path and the loaders under it): an
empty corpus, qrels of unknown documents, a missing split, duplicate doc ids and a Spider folder
without tables.json each give a one-line error naming the file, or a warning that says what was
left out while the metric stays meaningful; never a traceback or a silent 0.0."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from deepretrieval.cli import main
from deepretrieval.retrieval.beir import BeirFormatError, load_beir, load_corpus
from deepretrieval.sqlexec.datasets import MissingSplit, load_spider

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSIC_IR, SPIDER = str(CONFIGS / "scifact_bm25.toml"), str(CONFIGS / "spider.toml")
DOCS = [{"_id": "d1", "title": "Alpha", "text": "alpha beta"}, {"_id": "d2", "title": "", "text": "gamma delta"},
        {"_id": "d3", "title": "", "text": "epsilon"}]


def beir_folder(root, docs=DOCS, qrels=("q1\td1\t1",), splits=("test",)):
    """A BEIR folder with one query ("alpha beta") judged by `qrels` in each of `splits`."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "alpha beta"}) + "\n")
    for split in splits:
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return root


def eval_raw(config: str, data, *overrides: str) -> int:
    return main(["eval", "--config", config, "--raw-only", "--json", f"task.data={data}", *overrides])


def test_empty_corpus_is_an_error_naming_the_file(tmp_path):
    folder = beir_folder(tmp_path, docs=[])
    with pytest.raises(SystemExit, match=r"^cannot build the task: \S+corpus.jsonl holds no documents"):
        eval_raw(CLASSIC_IR, folder)
    with pytest.raises(BeirFormatError, match="holds no documents"):
        load_beir(folder)


def test_duplicate_doc_ids_are_an_error_naming_the_file(tmp_path):
    folder = beir_folder(tmp_path, docs=DOCS + [{"_id": "d2", "text": "again"}])
    with pytest.raises(SystemExit, match=r"corpus.jsonl: doc id 'd2' is given twice \(documents 2 and 4\)"):
        eval_raw(CLASSIC_IR, folder)
    with pytest.raises(BeirFormatError, match="given twice"):
        load_corpus(folder / "corpus.jsonl")
    with pytest.raises(SystemExit, match="doc id 'd2' is given twice"):
        main(["build-index", "--beir", str(folder), "--out", str(tmp_path / "index")])


def test_missing_test_split_is_an_error_naming_the_file(tmp_path):
    folder = beir_folder(tmp_path, splits=("train",))
    with pytest.raises(SystemExit, match=r"has no 'test' split \(it has \['train'\]\): "
                                         r"\S+/qrels/test.tsv does not exist"):
        eval_raw(CLASSIC_IR, folder)


def test_qrels_judging_only_unknown_documents_are_an_error(tmp_path):
    folder = beir_folder(tmp_path, qrels=("q1\tx1\t1", "q1\tx2\t1"))
    with pytest.raises(SystemExit, match=r"qrels/test.tsv: none of its 2 judgments names a document of the corpus "
                                         r"\(e.g. x1, x2\)"):
        eval_raw(CLASSIC_IR, folder)


def test_unknown_documents_are_counted_on_stderr_and_score_as_missed(tmp_path):
    folder = beir_folder(tmp_path, qrels=("q1\td1\t1", "q1\td9\t1"))
    run = subprocess.run([sys.executable, "-m", "deepretrieval", "eval", "--config", CLASSIC_IR, "--raw-only",
                          "--json", f"task.data={folder}"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (f"{folder}/qrels/test.tsv: 3 docs, 1 judged queries (1 in queries.jsonl), 2 judgments; "
            "1 unknown doc ids in 1 judgments (e.g. d9) (judged queries without text are left out; judgments of "
            "documents missing from the corpus stay and count as never retrieved)") in run.stderr
    raw = json.loads(run.stdout.splitlines()[0])
    # d1 is retrieved first; d9 can never be: NDCG@10 = 1 / (1 + 1/log2 3), recall 1/2
    assert raw["ndcg@10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert raw["recall@100"] == 0.5


@pytest.fixture
def spider_copy(spider_dir, tmp_path):
    """A Spider folder (dev.json, tables.json, pets_1's database) to take pieces away from."""
    root = tmp_path / "spider"
    (root / "database" / "pets_1").mkdir(parents=True)
    (root / "database" / "pets_1" / "pets_1.sqlite").write_bytes(
        (spider_dir / "database" / "pets_1" / "pets_1.sqlite").read_bytes())
    tables = [t for t in json.loads((spider_dir / "tables.json").read_text()) if t["db_id"] == "pets_1"]
    dev = [e for e in json.loads((spider_dir / "dev.json").read_text()) if e["db_id"] == "pets_1"][:2]
    (root / "tables.json").write_text(json.dumps(tables))
    (root / "dev.json").write_text(json.dumps(dev))
    return root


def test_spider_without_tables_json_says_so(spider_copy):
    (spider_copy / "tables.json").unlink()
    with pytest.raises(SystemExit, match=r"^cannot build the task: \S+/tables.json is missing: a Spider folder holds "
                                         "tables.json"):
        eval_raw(SPIDER, spider_copy, "task.workers=1")
    with pytest.raises(FileNotFoundError, match="tables.json is missing") as exc:
        load_spider(spider_copy)
    assert not isinstance(exc.value, MissingSplit)


def test_spider_without_its_test_split_names_the_file(spider_copy):
    (spider_copy / "dev.json").unlink()
    with pytest.raises(SystemExit, match=r"has no 'test' split \(it has \[\]\): \S+/dev.json does not exist"):
        eval_raw(SPIDER, spider_copy, "task.workers=1")
    with pytest.raises(MissingSplit):
        load_spider(spider_copy, "dev")

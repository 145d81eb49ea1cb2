"""The built-in datasets unpack to the public releases' bytes (the sha256 their SOURCE.md records
for BEIR SciFact and Spider 1.0), a damaged copy is repaired, and a missing one is a clear error."""
import hashlib
import json
import re

import pytest

from deepretrieval.tasks.packaged_data import PACKAGED, available, packaged_dataset, resolve_data_path

# The release hashes, as SOURCE.md's provenance tables give them (BEIR scifact.zip members; the
# official Spider dev.json / tables.json and 19 dev databases).
RELEASE_SHA256 = {
    "scifact": {"corpus.jsonl": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
                "queries.jsonl": "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
                "qrels/train.tsv": "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
                "qrels/test.tsv": "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c"},
    "spider": {"dev.json": "30d64a3fccde493226df79687aed9e4a1c0129525baf44f29c0573d914d758a4",
               "tables.json": "61bb20aa401f03164e2d7f3b16509b7b5f79cc9c943ca7bd159046df1159e2ed",
               "database/world_1/world_1.sqlite":
                   "17b986695f16786d58d66f85e49dba87bdfe72953207ab9b1b49da9d2301ef65"},
}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["scifact", "spider"])
def test_unpacks_to_the_release_bytes_and_repairs_damage(tmp_path, name):
    folder = packaged_dataset(name, tmp_path / name)
    for member, digest in RELEASE_SHA256[name].items():
        assert sha256(folder / member) == digest, member
    provenance = (PACKAGED / name / "SOURCE.md").read_text()
    manifest = json.loads((PACKAGED / name / "MANIFEST.json").read_text())
    for member in manifest:                         # every shipped file is one the provenance lists
        assert sha256(folder / member) in provenance, member
    victim = next(iter(RELEASE_SHA256[name]))
    (folder / victim).write_text("tampered")
    assert packaged_dataset(name, folder) == folder
    assert sha256(folder / victim) == RELEASE_SHA256[name][victim]


def test_contents_match_the_documented_counts(tmp_path):
    scifact = packaged_dataset("scifact", tmp_path / "s")
    assert sum(1 for _ in open(scifact / "corpus.jsonl")) == 5183
    assert sum(1 for _ in open(scifact / "queries.jsonl")) == 1109
    spider = packaged_dataset("spider", tmp_path / "p")
    dev = json.loads((spider / "dev.json").read_text())
    assert len(dev) == 1034
    have = {p.parent.name for p in (spider / "database").glob("*/*.sqlite")}
    assert len(have) == 19 and "wta_1" not in have and {e["db_id"] for e in dev} - have == {"wta_1"}


def test_builtin_spec_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPRETRIEVAL_CACHE", str(tmp_path))
    assert available() == ["scifact", "spider"]
    assert resolve_data_path("some/folder") == "some/folder"
    assert resolve_data_path("builtin:spider") == str(tmp_path / "data" / "spider")
    with pytest.raises(SystemExit, match=re.escape("no built-in dataset 'nope' (built-in: scifact, spider")):
        packaged_dataset("nope")


def test_processes_unpacking_at_once_do_not_collide(tmp_path):
    """Experiment processes started together once raced on one temporary file name (one renamed
    the file away under another). Four processes start unpacking at the same instant."""
    import subprocess
    import sys
    import time
    code = ("import sys, time; from deepretrieval.tasks.packaged_data import packaged_dataset; "
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); packaged_dataset('scifact', sys.argv[1])")
    start = time.time() + 3.0                       # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "scifact"), str(start)],
                              stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate()[1].decode()[-300:] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert sha256(tmp_path / "scifact" / "corpus.jsonl") == RELEASE_SHA256["scifact"]["corpus.jsonl"]

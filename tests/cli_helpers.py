"""Fixtures for the CLI tests: a tiny random Llama with SmolLM2's real tokenizer saved as a HF
folder, and tiny data folders for each task family built from the built-in datasets."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from deepretrieval.policy import export_hf
from deepretrieval.model.config import ModelConfig
from deepretrieval.model.registry import smollm2_gguf_path
from deepretrieval.model.tokenizer import Tokenizer
from deepretrieval.model.transformer import Transformer


def tiny_llama_dir(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide Llama (normal(0, 0.02) weights) with SmolLM2-135M-Instruct's tokenizer."""
    tokenizer = Tokenizer.from_gguf(smollm2_gguf_path())
    cfg = ModelConfig.from_hf_dict({
        "model_type": "llama", "vocab_size": tokenizer.vocab_size, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 4096, "tie_word_embeddings": True})
    g = torch.Generator().manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight") else torch.randn(p.shape, generator=g) * 0.02)
    return export_hf(model, tokenizer, folder)


def beir_subset(scifact: Path, folder: Path, docs: int = 400) -> Path:
    """SciFact's first `docs` abstracts and the train/test claims judged only against them."""
    (folder / "qrels").mkdir(parents=True)
    lines = (scifact / "corpus.jsonl").read_text().splitlines()[:docs]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    keep = {json.loads(line)["_id"] for line in lines}
    qids = set()
    for split in ("train", "test"):
        rows = [r.split("\t") for r in (scifact / "qrels" / f"{split}.tsv").read_text().splitlines()]
        rows = [r for r in rows[1:] if r[1] in keep]
        qids |= {r[0] for r in rows}
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
    queries = [q for q in (scifact / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in qids]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    return folder


def qa_fixture(scifact: Path, folder: Path, docs: int = 300) -> Path:
    """DPR-style passages (id, text, title) and questions whose answer is in one passage."""
    folder.mkdir(parents=True)
    rows = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:docs]]
    with open(folder / "psgs_w100.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "text", "title"])
        for d in rows:
            w.writerow([d["_id"], d["text"], d["title"]])
    for split, part in (("train", rows[:40:5]), ("test", rows[1:40:10])):
        qs = [{"question": d["title"], "answers": [" ".join(d["text"].split()[:4])]} for d in part]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    return folder


def review_fixture(folder: Path) -> Path:
    """Two literature reviews whose included ids are real records of the offline MEDLINE sample."""
    from deepretrieval.retrieval.medline_backend import MedlineBackend
    folder.mkdir(parents=True)
    gold = MedlineBackend.builtin().search("cancer[tiab]", max_results=3000)[:10]
    row = {"pico": {"P": "adults with cancer", "I": "chemotherapy", "C": "placebo", "O": "survival"},
           "publication_pmids": gold, "pub_date": "2030/01/01"}
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    return folder

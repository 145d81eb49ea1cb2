"""The BERT encoder refuses RoBERTa-family checkpoints (XLM-R: multilingual-e5-large-instruct, the
reference's SciFact dense encoder) instead of encoding them wrongly; transformers is the reference.

    python -m pytest -q tests/test_retrieval_bert_families.py
"""
import json

import pytest
import torch

from deepretrieval.retrieval.bert_encoder import EncoderSpec, NotBertError, load_bert, load_encoder


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory):
    from tokenizers import Tokenizer, models
    from transformers import XLMRobertaConfig, XLMRobertaModel
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1)
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    folder = tmp_path_factory.mktemp("xlmr")
    model.save_pretrained(folder)
    Tokenizer(models.WordLevel({"<unk>": 3}, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    return folder, model


def test_xlm_roberta_is_refused_in_one_line(tiny_xlmr):
    folder, _ = tiny_xlmr
    assert json.loads((folder / "config.json").read_text())["model_type"] == "xlm-roberta"
    with pytest.raises(NotBertError, match="model_type 'xlm-roberta' is not BERT"):
        load_bert(folder)
    with pytest.raises(SystemExit) as exc:
        load_encoder(str(folder), spec=EncoderSpec())
    assert "use a BERT-family model" in str(exc.value) and "\n" not in str(exc.value)


def test_why_it_is_refused_the_weights_load_but_encode_wrongly(tiny_xlmr, tmp_path):
    """Renamed to model_type "bert", the same weights load without complaint (same names and
    shapes), yet XLM-R numbers positions from padding_idx + 1 = 2, so every output differs."""
    folder, hf_model = tiny_xlmr
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    ours = load_bert(tmp_path)
    ids = torch.tensor([[0, 5, 9, 17, 2]])                            # [1, T]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state      # [1, T, H]
        wrong = ours(ids, mask)
        ours.position.weight.data = ours.position.weight.data[2:].clone()              # XLM-R's offset
        shifted = ours(ids, mask)
    assert (wrong - expected).abs().max() > 1e-2
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=1e-5)

"""The built-in SmolLM2-135M-Instruct (Q4_1 GGUF): our dequantisation, Q/K un-permutation, decoder
and sampler give token-identical greedy generations to transformers loading the same GGUF file,
and `deepretrieval generate` prints what the sampler produced."""
from __future__ import annotations

import json

import pytest
import torch

from deepretrieval.model.chat_template import render_chat
from deepretrieval.model.hf_weights import hf_key_table
from deepretrieval.model.registry import load_model, smollm2_gguf_path
from deepretrieval.model.sampler import SamplingParams, generate

QUESTIONS = [
    "What is the capital of France?",
    "Write a Python function that returns the square of a number.",
    "Rewrite this search query to find more relevant papers: effects of coffee on sleep",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Decoding at batch <= 3 is latency-bound; with the 2 CPU cores shared, OpenMP's second
    thread mostly waits at barriers (measured: the module took 6 min with 2 threads, 1 min with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    path = smollm2_gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def test_config_from_gguf_metadata(ours, reference):
    model, tokenizer = ours
    cfg, hf = model.cfg, reference[0].config
    assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads) == \
        (hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size, hf.num_attention_heads,
         hf.num_key_value_heads) == (30, 576, 1536, 9, 3)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0 and cfg.vocab_size == 49152
    assert tokenizer.chat_template == "smollm2" and 2 in tokenizer.stop_token_ids


def test_weights_equal_transformers_dequantisation(ours, reference):
    """Every weight, including the un-permuted q/k projections, equals transformers' copy."""
    model, hf = ours[0], reference[0]
    hf_state = hf.state_dict()
    for hf_key, (name, _) in hf_key_table(model.cfg).items():
        assert torch.equal(model.get_parameter(name), hf_state[hf_key]), hf_key


def test_greedy_64_tokens_identical_to_transformers(ours, reference):
    model, tokenizer = ours
    hf_model, hf_tokenizer = reference
    prompts = []
    for q in QUESTIONS:
        messages = [{"role": "user", "content": q}]
        ids = tokenizer.encode(render_chat(messages, tokenizer.chat_template))
        assert ids == list(hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                           ["input_ids"])
        prompts.append(ids)
    # ours: the three prompts in one left-padded batch; transformers: one at a time, no padding
    params = SamplingParams(max_new_tokens=64, temperature=0.0, stop_token_ids=(2,))
    out = generate(model, prompts, params, pad_token_id=2)
    for ids, got, logprobs in zip(prompts, out.token_lists(), out.logprob_lists()):
        with torch.no_grad():
            want = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=64, do_sample=False, eos_token_id=2, pad_token_id=2)
        assert got == want[0, len(ids):].tolist()
        assert len(got) >= 8 and all(lp <= 0 for lp in logprobs)


def test_generate_command_json(ours, monkeypatch, capsys):
    from deepretrieval.cli import main
    from deepretrieval.model import registry
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: ours)
    assert main(["generate", "--model", "smollm2-135m", "--prompt", QUESTIONS[0], "--chat",
                 "--max-new-tokens", "24", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model, tokenizer = ours
    prompt = tokenizer.encode(render_chat([{"role": "user", "content": QUESTIONS[0]}], "smollm2"))
    expected = generate(model, [prompt], SamplingParams(max_new_tokens=24, temperature=0.0,
                                                        stop_token_ids=tuple(tokenizer.stop_token_ids)), pad_token_id=2)
    assert result["token_ids"] == expected.token_lists()[0]
    assert result["logprobs"] == pytest.approx(expected.logprob_lists()[0], abs=1e-6)
    assert result["text"] == tokenizer.decode(result["token_ids"], skip_special_tokens=True)
    assert "Paris" in result["text"]
    assert result["finish_reason"] == ("stop" if result["token_ids"][-1] == 2 else "length")
    assert result["prompt_tokens"] == len(prompt)

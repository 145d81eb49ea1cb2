"""bench/fast_generate.py on the CPU: the batched-rollout roofline against hand-computed cases, and the
markdown table with and without the transformers reference (--ours-only), and the compiled greedy
loop reference against transformers `generate`."""
from types import SimpleNamespace

import pytest

from bench.fast_generate import markdown, rollout_roofline

TINY = SimpleNamespace(num_layers=1, num_kv_heads=1, head_dim=2, num_heads=1, vocab_size=10)


def test_memory_bound_step_by_hand():
    # one decode step, batch 1, context 1: weights 100 B + K and V of 1 layer, 1 head of 2 dims at
    # 2 B for one token (8 B) + logits of 10 entries at 4 B written and read (80 B) = 188 B at 1 B/s
    r = rollout_roofline(TINY, weight_bytes=100, batch=1, prompt_len=1, new_tokens=1,
                         bandwidth=1.0, peak_flops=1e30)
    assert r["tok_s"] == pytest.approx(1 / 188)
    assert (r["weights_share"], r["kv_share"], r["logits_share"]) == (
        round(100 / 188, 3), round(8 / 188, 3), round(80 / 188, 3))


def test_compute_bound_prefill_and_steps_by_hand():
    # 50 params: prefill 2*50*batch 2*prompt 3 = 600 FLOPs; each of 2 steps 2*(100 + 4*1*1*2*ctx)
    # FLOPs with ctx 3 then 4 = 248 and 264; at 1 FLOP/s and infinite bandwidth: 1112 s for 4 tokens
    r = rollout_roofline(TINY, weight_bytes=100, batch=2, prompt_len=3, new_tokens=2,
                         bandwidth=1e30, peak_flops=1.0)
    assert r["tok_s"] == pytest.approx(4 / (600 + 248 + 264))
    # the 2 rows repeat one prompt (a GRPO group of 2): it is prefilled once, 300 FLOPs
    grouped = rollout_roofline(TINY, weight_bytes=100, batch=2, prompt_len=3, new_tokens=2,
                               bandwidth=1e30, peak_flops=1.0, group=2)
    assert grouped["tok_s"] == pytest.approx(4 / (300 + 248 + 264))


def test_kv_reads_grow_with_the_context():
    # weights only dominate a short batch-1 generation; at batch 256 and long contexts the KV
    # cache and the logits take most of the bytes
    small = rollout_roofline(TINY, 10 ** 6, 1, 1, 4, 1e12, 1e30)
    big = rollout_roofline(TINY, 10 ** 6, 256, 4096, 512, 1e12, 1e30)
    assert small["weights_share"] > 0.99 and big["kv_share"] > big["weights_share"]


def test_markdown_rows_with_and_without_the_reference():
    base = {"model": "qwen2.5-0.5b-shape", "case": "rollout", "batch": 64, "prompt_len": 256, "new_tokens": 512,
            "temperature": 1.0, "ours_tok_s": 40000.4, "ours_mem_gib": 1.5, "roofline_fraction": 0.234,
            "roofline_tok_s": 170700.0}
    with_ref = {**base, "transformers_tok_s": 3401.0, "ratio": 11.76, "transformers_mem_gib": 2.253}
    lines = markdown([with_ref, base]).splitlines()
    assert len(lines) == 4 and all(line.count("|") == 13 for line in lines)
    assert lines[2] == ("| qwen2.5-0.5b-shape | rollout b64 p256 n512 T1 | 40000 | 3401 | 11.8x |  |  |  |  | "
                        "23 % of 170700 | 1.50 | 2.25 |")
    assert lines[3] == ("| qwen2.5-0.5b-shape | rollout b64 p256 n512 T1 | 40000 | - | - |  |  |  |  | "
                        "23 % of 170700 | 1.50 | - |")


def test_greedy_loop_reference_equals_transformers_generate():
    """The gpt-fast style reference (uncompiled here; one cache reused across calls) decodes what
    transformers' greedy `generate` decodes, twice in a row."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bench.fast_generate import greedy_loop
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.Qwen2Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=1.0)).eval()   # sharp: positions matter
    prompt = torch.randint(1, 96, (1, 7), generator=torch.Generator().manual_seed(1))
    cache = transformers.StaticCache(config=hf.config, max_cache_len=7 + 9)
    run = greedy_loop(hf, cache, compile_step=lambda f: f)
    with torch.no_grad():
        want = hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=9,
                           min_new_tokens=9, do_sample=False, pad_token_id=0)[:, 7:]
    assert torch.equal(run(prompt, 9), want)
    assert torch.equal(run(prompt, 9), want)      # the reset cache gives the same tokens again

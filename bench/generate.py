"""Generation throughput: our sampler (model/sampler.py) against transformers' `generate`, same
model, same weights, same prompts, same settings (greedy, fixed number of new tokens), same run.

    python -m bench.generate --device cpu                   # SmolLM2-135M (built-in GGUF), batch 1 and 16
    python -m bench.generate --device cuda                  # Qwen2.5-0.5B and -3B shapes, random bf16 weights
    python -m bench.generate --device cpu --threads 1 --new-tokens 32

Prints tokens/s (new tokens of the whole batch per second of wall time, prefill included; best
of --repeats alternated runs of each side) and the ratio ours / transformers, and appends one
JSON line per (model, batch) to bench/results/generate.jsonl. transformers is a benchmark-only
dependency. Each side runs once untimed first (allocator, kernels and caches warm). Prompts are
ragged (left-padded batches). On CUDA ours is the fast path (model/fast_decode.py: Triton kernels,
CUDA graphs); `python -m bench.fast_generate` measures the issue-7 cases against the HBM roofline.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.results_log import append_result
from deepretrieval.model.config import ModelConfig
from deepretrieval.model.hf_weights import DictSource, build_model, save_hf
from deepretrieval.model.sampler import SamplingParams, generate

# Qwen/Qwen2.5-{0.5B,3B}-Instruct config.json shapes; weights random.
QWEN25_SHAPES = {
    "qwen2.5-0.5b-shape": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                               num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b-shape": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                             num_key_value_heads=2, tie_word_embeddings=True),
}
QWEN25_COMMON = dict(vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ragged_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """`batch` random prompts of lengths in [length/2, length]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g).tolist()
    return [torch.randint(100, vocab, (n,), generator=g).tolist() for n in lengths]


def time_ours(model, prompts, new_tokens: int, temperature: float = 0.0, **generate_kwargs) -> float:
    """Seconds of one `generate` call (greedy unless `temperature`); kwargs go to `generate`."""
    params = SamplingParams(max_new_tokens=new_tokens, temperature=temperature)
    _sync(model.device)
    start = time.perf_counter()
    out = generate(model, prompts, params, pad_token_id=0, **generate_kwargs)
    _sync(model.device)
    assert out.tokens.shape == (len(prompts), new_tokens)
    return time.perf_counter() - start


def time_hf(hf, prompts, new_tokens: int, device: torch.device, temperature: float = 0.0) -> float:
    """Seconds of one transformers `generate` call on the same left-padded batch (greedy unless
    `temperature`: then plain sampling, no top-k/top-p, as ours)."""
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    ids, mask = ids.to(device), mask.to(device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          pad_token_id=0, **(dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
                                             if temperature else dict(do_sample=False)))
    _sync(device)
    assert out.shape == (len(prompts), P + new_tokens)
    return time.perf_counter() - start


def compare(name: str, ours, hf, batches: list[int], prompt_len: int, new_tokens: int, repeats: int,
            extra: dict) -> None:
    device = ours.device
    for batch in batches:
        prompts = ragged_prompts(batch, prompt_len, ours.cfg.vocab_size)
        # warm-up, untimed (ours at full length: the fast decoder it builds is reused by the timed runs)
        time_hf(hf, prompts, 4, device), time_ours(ours, prompts, new_tokens)
        # alternate the two and keep each one's best: a shared machine's noise only ever slows a run
        t_hf = t_ours = float("inf")
        for _ in range(repeats):
            t_hf = min(t_hf, time_hf(hf, prompts, new_tokens, device))
            t_ours = min(t_ours, time_ours(ours, prompts, new_tokens))
        tps_ours, tps_hf = batch * new_tokens / t_ours, batch * new_tokens / t_hf
        print(f"{name:20s} batch {batch:3d}: ours {tps_ours:9.1f} tok/s   transformers {tps_hf:9.1f} tok/s   "
              f"ratio {tps_ours / tps_hf:5.2f}x")
        append_result("generate", {"model": name, "batch": batch, "prompt_len_max": prompt_len,
                                   "new_tokens": new_tokens, "repeats": repeats,
                                   "dtype": str(ours.dtype).removeprefix("torch."),
                                   "ours_tok_s": round(tps_ours, 2), "transformers_tok_s": round(tps_hf, 2),
                                   "ratio": round(tps_ours / tps_hf, 3), **extra})


def smollm2_pair(dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(our built-in SmolLM2-135M-Instruct, its tokenizer, a transformers model with the same
    dequantised weights loaded through our HF export), in eval mode on `device`."""
    import tempfile

    import transformers
    from deepretrieval.model.registry import load_model
    ours, tokenizer = load_model("smollm2-135m", dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, tmp)
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval().to(device)
    return ours, tokenizer, hf


def bench_cpu(args) -> None:
    import transformers
    ours, _, hf = smollm2_pair()
    compare("smollm2-135m", ours, hf, args.batches or [1, 16], args.prompt_len, args.new_tokens, args.repeats,
            {"threads": torch.get_num_threads(), "transformers": transformers.__version__})


def cuda_hf(name: str):
    """A transformers Qwen2 model at QWEN25_SHAPES[name], random bf16 weights (seed 0), on the GPU."""
    import transformers
    torch.manual_seed(0)
    hf_cfg = transformers.Qwen2Config(**QWEN25_SHAPES[name], **QWEN25_COMMON)
    with torch.device("cuda"):   # initialise on the GPU: a 3B random init on CPU takes minutes
        return transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16).eval()


def cuda_pair(name: str):
    """(transformers model, our model) with the same random bf16 weights, on the GPU."""
    hf = cuda_hf(name)
    ours = build_model(ModelConfig.from_hf_dict(hf.config.to_dict()), DictSource(hf.state_dict()),
                       torch.bfloat16, "cuda")
    return hf, ours


def bench_cuda(args) -> None:
    import transformers
    for name in QWEN25_SHAPES:
        hf, ours = cuda_pair(name)
        compare(name, ours, hf, args.batches or [1, 16, 64], args.prompt_len, args.new_tokens, args.repeats,
                {"transformers": transformers.__version__})
        del hf, ours
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batches", type=int, nargs="*", help="default: 1 16 (cpu), 1 16 64 (cuda)")
    parser.add_argument("--prompt-len", type=int, default=64, help="longest prompt; others from half of it")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU is available")
        bench_cuda(args)
    else:
        bench_cpu(args)


if __name__ == "__main__":
    main()

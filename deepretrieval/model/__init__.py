"""Decoder LLMs (Qwen2/2.5, Qwen3, Llama/SmolLM2): config, weights, tokenizer, KV cache, sampler.

    from deepretrieval.model.registry import load_model
    from deepretrieval.model.sampler import SamplingParams, generate
    model, tok = load_model("smollm2-135m")                    # or a HF folder / .gguf path
    out = generate(model, [tok.encode("Hello")], SamplingParams(max_new_tokens=32, temperature=0),
                   pad_token_id=tok.pad_token_id)

config.py (ModelConfig from config.json), transformer.py (the decoder), kv_cache.py,
hf_weights.py (safetensors load/save through an explicit key table), gguf_weights.py (GGUF),
tokenizer.py + chat_template.py, sampler.py (generation), fast_decode.py (its CUDA decode step:
Triton kernels in a CUDA graph), registry.py (names and paths -> model).
"""

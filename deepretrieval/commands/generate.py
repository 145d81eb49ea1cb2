"""`deepretrieval generate`: complete one prompt with a built-in or local model.

    deepretrieval generate --model smollm2-135m --prompt "What is BM25?" --chat
    deepretrieval generate --model /models/Qwen2.5-3B-Instruct --prompt "..." --chat --device cuda \\
        --dtype bfloat16 --temperature 0.7 --top-p 0.9 --seed 0 --json

Prints the completion (special tokens removed); with --json one JSON object: text, token_ids,
logprobs (per token, of the temperature-scaled distribution), finish_reason ("stop"/"length"),
prompt_tokens, model. Temperature 0 is greedy decoding.
"""
from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m",
                        help="built-in name (smollm2-135m), a local HF model folder or a .gguf file")
    parser.add_argument("--prompt", required=True, help="the prompt text (with --chat: the user message)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--system", default=None, help="system message (with --chat)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (default: cuda when present), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.model.chat_template import render_chat
    from deepretrieval.model.registry import load_model, resolve_device
    from deepretrieval.model.sampler import SamplingParams, generate

    if args.system is not None and not args.chat:
        raise SystemExit("deepretrieval generate: --system needs --chat (it is a turn of the chat template)")
    try:
        device = resolve_device(args.device)
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p)
        dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
        model, tokenizer = load_model(args.model, dtype=dtype, device=device)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"deepretrieval generate: {exc}") from None

    text = args.prompt
    if args.chat:
        if tokenizer.chat_template is None:
            raise SystemExit(f"deepretrieval generate: {args.model} has no known chat template; run without --chat")
        messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
        text = render_chat(messages + [{"role": "user", "content": args.prompt}], tokenizer.chat_template)
    prompt_ids = tokenizer.encode(text)
    if not prompt_ids:
        raise SystemExit("deepretrieval generate: the prompt is empty")
    params = dataclasses.replace(params, stop_token_ids=tuple(tokenizer.stop_token_ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0   # masked out anyway
    out = generate(model, [prompt_ids], params, pad_token_id=pad_id, seed=args.seed)
    token_ids, logprobs = out.token_lists()[0], out.logprob_lists()[0]
    completion = tokenizer.decode(token_ids, skip_special_tokens=True)
    if args.json:
        print(json.dumps({"model": str(args.model), "text": completion, "token_ids": token_ids,
                          "logprobs": logprobs, "finish_reason": out.finish_reasons[0],
                          "prompt_tokens": len(prompt_ids)}))
    else:
        print(completion)
    return 0

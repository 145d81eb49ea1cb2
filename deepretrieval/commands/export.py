"""`deepretrieval export`: a trained policy in HF format (config.json + model.safetensors + tokenizer).

    deepretrieval export --checkpoint runs/demo --out exported/demo        # newest checkpoint
    deepretrieval export --checkpoint runs/demo/checkpoints/step_00000008 --out DIR --dtype bf16

transformers loads the result: AutoModelForCausalLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR).
"""
from __future__ import annotations

import argparse
import json

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run dir, checkpoint dir or model name/folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weight dtype (default fp32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from deepretrieval.model.registry import resolve_dtype
    from deepretrieval.policy import export_hf, load_policy
    model, tokenizer = load_policy(args.checkpoint)
    out = export_hf(model.to(resolve_dtype(DTYPES[args.dtype])), tokenizer, args.out)
    summary = {"out": str(out), "checkpoint": args.checkpoint, "dtype": args.dtype,
               "files": sorted(p.name for p in out.iterdir())}
    print(json.dumps(summary) if args.json else f"exported {args.checkpoint} to {out} ({args.dtype})")
    return 0

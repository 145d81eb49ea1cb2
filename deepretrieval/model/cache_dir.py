"""Where deepretrieval keeps files it derives once and reuses (built tokenizers, the unpacked demo
corpus): `$DEEPRETRIEVAL_CACHE` when set, else `~/.cache/deepretrieval`.

    from deepretrieval.model.cache_dir import cache_root
    folder = cache_root() / "tokenizers"
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("DEEPRETRIEVAL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "deepretrieval"

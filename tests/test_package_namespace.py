"""The distribution installs one top-level name, `deepretrieval`, so it can sit next to packages
with generic names: transformers (5.x) depends on Hugging Face's `kernels` package, which a
top-level `kernels` of ours used to shadow (`ImportError: cannot import name 'use_triton' from
'kernels'`)."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_one_top_level_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("deepretrieval-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"deepretrieval"}
    for data in ("deepretrieval/demo.toml", "deepretrieval/tasks/data/scifact/corpus.jsonl.gz",
                 "deepretrieval/tasks/data/spider/database/world_1/world_1.sqlite.gz",
                 "deepretrieval/tasks/data/spider/DATA_LICENSE.md",
                 "deepretrieval/retrieval/data/medline_sample.xml.gz"):
        assert data in names, data


def test_imports_next_to_transformers_and_its_kernels_package(tmp_path):
    code = ("import transformers, kernels, deepretrieval.kernels as ours\n"
            "from deepretrieval.kernels import use_triton\n"
            "assert 'deepretrieval' not in kernels.__file__, kernels.__file__\n"
            "assert ours.__file__.endswith('deepretrieval/kernels/__init__.py'), ours.__file__\n"
            "print(transformers.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

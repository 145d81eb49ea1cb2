"""Shared test setup: markers, and where the shared data lives.

    pytest                      # fast default run (CPU)
    pytest --run-slow           # also the slow tests (or DEEPRETRIEVAL_SLOW=1)
    pytest -m gpu               # on a CUDA machine: the GPU tests

`gpu` tests skip, saying why, when no CUDA device is present; `slow` tests skip unless asked for.
Test data lives in ../shared/data beside the project: in CI it is always there, so a missing
folder is an error (the test fails), never a silent skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow") or os.environ.get("DEEPRETRIEVAL_SLOW") == "1"
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow or DEEPRETRIEVAL_SLOW=1")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present (run on the GPU machine)")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


def shared_data(name: str) -> Path:
    """Path of ../shared/data/<name>; raises (so the test fails) when it is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        raise FileNotFoundError(
            f"test data {path} is missing: the project expects ../shared/data beside its root "
            "(CI always provides it)")
    return path


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: on 2 shared CPU cores, small-batch training and
    decoding run faster and steadier without OpenMP's second thread waiting at barriers."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return shared_data("scifact")


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    return shared_data("spider")


@pytest.fixture(scope="session")
def api_fixtures_dir() -> Path:
    return shared_data("api_fixtures")

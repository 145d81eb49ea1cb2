"""Shared test setup: markers, and the data the tests read (all of it inside the repository).

    pytest                      # fast default run (CPU)
    pytest --run-slow           # also the slow tests (or DEEPRETRIEVAL_SLOW=1)
    pytest -m gpu               # on a CUDA machine: the GPU tests

`gpu` tests skip, saying why, when no CUDA device is present; `slow` tests skip unless asked for.
Real data ships with the repository: SciFact and Spider as the package's built-in datasets
(deepretrieval/tasks/data, unpacked once into the cache by tasks/packaged_data.py), the recorded
PubMed / ClinicalTrials.gov responses in tests/data/api_fixtures. A missing file is an error (the
test fails), never a silent skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepretrieval.tasks.packaged_data import packaged_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


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
    return packaged_dataset("scifact")


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    return packaged_dataset("spider")


@pytest.fixture(scope="session")
def api_fixtures_dir() -> Path:
    path = TEST_DATA / "api_fixtures"
    if not path.is_dir():
        raise FileNotFoundError(f"test data {path} is missing from the repository")
    return path

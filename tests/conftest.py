"""Shared fixtures: tiny configs and models built deterministically on the CPU."""

from __future__ import annotations

import os

# One intra-op thread per process: the suite runs Ray workers and Serve replicas beside the test
# process on a 2-core machine, and oversubscribed OpenMP threads make tiny-model steps ~100x slower.
# Set before torch initialises so worker processes (which inherit the environment) get it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from selfforcing.config import load_config
from selfforcing.models import WanDiT


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_config():
    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> WanDiT:
    torch.manual_seed(0)
    return WanDiT(tiny_config.model).double().eval()

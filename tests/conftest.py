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

from selfforcing.config import load_config  # noqa: E402
from selfforcing.diffusion import FlowMatchSchedule  # noqa: E402
from selfforcing.models import WanDiT  # noqa: E402


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


# Tiny fp64 models and inputs for the rollout / objective tests: latents [B=2, F=6, C=4, 4, 4].
@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def schedule():
    return FlowMatchSchedule(1000, 5.0)


@pytest.fixture(scope="module")
def steps(schedule):
    return schedule.warp_timesteps([1000.0, 750.0, 500.0, 250.0])


@pytest.fixture
def make_model(cfg):
    def make(seed: int = 0, dtype: torch.dtype = torch.float64) -> WanDiT:
        torch.manual_seed(seed)
        return WanDiT(cfg.model).to(dtype)

    return make


@pytest.fixture
def text(cfg):
    g = torch.Generator().manual_seed(123)
    return torch.randn(2, cfg.model.text_len, cfg.model.text_dim, generator=g, dtype=torch.float64)

"""Tiny fp64 models and inputs for the rollout tests: latents [B=2, F=6, C=4, 4, 4], text_len 16."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.diffusion import FlowMatchSchedule
from selfforcing.models import WanDiT


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded; with other jobs on the cores, threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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

"""Integration fixtures: one local Ray instance for the whole session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray shared by every Ray / Serve / Tune test."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2)
    yield
    ray.shutdown()

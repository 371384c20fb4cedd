"""Integration fixtures: one local Ray instance for the whole session."""

from __future__ import annotations

import os

import pytest

# Serve marks its HTTP proxy unhealthy after 3 missed 10 s health checks and kills it; on a loaded
# 2-core CI machine a busy replica can starve the proxy that long, and every later request is refused.
# Generous limits for tests only (Serve's actors inherit this environment from the driver).
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S", "30")
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
# Ray Train's preemption watcher polls for node drains, which a one-node local cluster never has: one
# actor process less per training run (each imports torch; on 2 cores that is seconds per run).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray shared by every Ray / Serve / Tune test."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2)  # never attach to a head another test or user started
    yield
    ray.shutdown()

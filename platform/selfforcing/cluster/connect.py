"""One way every job attaches to Ray, so `python jobs/x.py` works on a laptop and under `ray job submit`."""

from __future__ import annotations

import os

from ..config.job import RayConfig


def connect_ray(config: RayConfig | None = None, quiet: bool = False) -> bool:
    """Attach to ``config.address`` or ``$RAY_ADDRESS`` (what `ray job submit` sets), else start an embedded
    local Ray with ``config.num_cpus``. Returns True when this call started Ray (the caller shuts it down).

    An already initialised Ray (a test's session fixture, a notebook) is reused as it is.
    """
    import ray

    config = config or RayConfig()
    if ray.is_initialized():
        return False
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not quiet)
        return True
    # address="local": always a new embedded instance, never one some `ray start` left on this machine.
    ray.init(address="local", num_cpus=config.num_cpus, log_to_driver=not quiet, include_dashboard=False)
    return True

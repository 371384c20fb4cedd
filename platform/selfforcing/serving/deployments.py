"""Thin Serve wrappers around the runners and the job store. Logic lives in the plain classes.

Default options here suit the embedded 2-CPU default (fractional CPUs: every replica would otherwise
reserve a whole CPU); ``serve/config.yaml`` overrides them (GPUs, autoscaling) per deployment name.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from .errors import APIError
from .jobs import JobStore
from .model_source import ModelSourceArgs, load_source
from .runner import (
    Cancelled,
    GenerationTimeout,
    GeneratorRunner,
    TextEncoderRunner,
    build_generator_pipeline,
    model_info,
)

log = logging.getLogger("ray.serve")


def _set_threads(torch_threads: int | None) -> None:
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)


@serve.deployment(name="TextEncoder", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class TextEncoderDeployment:
    """Prompt -> embedding [1, L, D]; concurrent prompts are batched into one encoder pass."""

    def __init__(self, source: ModelSourceArgs, device: str | None = None, torch_threads: int | None = None):
        _set_threads(torch_threads)
        loaded = load_source(source)
        self.info_ = model_info(loaded)
        self.runner = TextEncoderRunner(loaded, device)

    def info(self) -> dict[str, Any]:
        """The served model's description. Asked here, not of a generator: generators may all be busy
        with long videos, the text encoder answers in milliseconds (both load the same source)."""
        return self.info_.model_dump()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def encode(self, prompts: list[str]) -> list[np.ndarray]:
        out = await asyncio.to_thread(self.runner.encode, prompts)
        return [row[None] for row in out]


@serve.deployment(
    name="Generator",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=2,
    max_queued_requests=4,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1},
)
class GeneratorDeployment:
    """One generator (DiT + VAE) per replica; ``stream`` yields chunks as they are decoded."""

    def __init__(
        self, source: ModelSourceArgs, device: str | None = None, torch_threads: int | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        _set_threads(torch_threads)
        loaded = load_source(source)
        self.info_ = model_info(loaded)
        self.runner = GeneratorRunner(build_generator_pipeline(loaded, device), self.info_, timeout_s)

    def check_health(self) -> None:
        return None

    async def stream(self, spec: dict[str, Any], text: np.ndarray) -> AsyncIterator[dict[str, Any]]:
        """Chunks of one video (see ``GeneratorRunner.chunks``); a cancelled request (the client went
        away) stops after the chunk in flight, so the replica is free again within one chunk's time."""
        stop = threading.Event()
        chunks = self.runner.chunks(spec, text, stop)
        done = object()
        try:
            while True:
                # Each chunk is computed in a worker thread: the replica's event loop stays free to
                # notice cancellation and to answer health checks.
                item = await asyncio.to_thread(next, chunks, done)
                if item is done:
                    return
                yield item
        except GenerationTimeout as exc:
            yield {"error": {"code": "timeout", "message": str(exc), "type": "server_error"}}
        except (asyncio.CancelledError, Cancelled):
            stop.set()
            log.info("generation cancelled (client disconnected)")
            raise
        finally:
            stop.set()


@serve.deployment(name="JobStore", num_replicas=1, ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=256)
class JobStoreDeployment:
    """The single shared ``JobStore`` (must stay at one replica). ``call`` returns ``{"ok": value}`` or
    ``{"error": (status, body, headers)}`` so API errors cross the handle without exception wrapping."""

    def __init__(self, **store_kwargs: Any) -> None:
        self.store = JobStore(**store_kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        try:
            return {"ok": getattr(self.store, method)(*args, **kwargs)}
        except APIError as err:
            return {"error": (err.status, err.body(), err.headers)}


class JobStoreClient:
    """Ingress-side proxy: ``await client.get(id)`` -> value, or raises the store's ``APIError``."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __getattr__(self, method: str):
        async def call(*args: Any, **kwargs: Any) -> Any:
            out = await self.handle.call.remote(method, *args, **kwargs)
            if "error" in out:
                status, body, headers = out["error"]
                e = body["error"]
                raise APIError(status, e["message"], e["type"], e["param"], e["code"], headers)
            return out["ok"]

        return call

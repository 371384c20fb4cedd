"""Thin Serve wrappers around the runners and the job store. Logic lives in the plain classes.

Default options here suit the embedded 2-CPU default (fractional CPUs: every replica would otherwise
reserve a whole CPU); ``serve/config.yaml`` overrides them (GPUs, autoscaling) per deployment name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from ..inference.batching import ChunkBatcher
from .batch_loop import BatchLoop, Overloaded
from .errors import APIError
from .jobs import JobStore
from .model_source import ModelSourceArgs, load_source
from .runner import TextEncoderRunner, build_generator_pipeline, model_info

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


@dataclass
class GeneratorSettings:
    """How a generator replica shares its model among streams (``ServeArgs`` fills it)."""

    batching: bool = True  # False: one stream per model call, streams take turns (the baseline)
    max_streams: int = 8  # batch rows: streams generating at once
    max_waiting: int = 4  # streams waiting for a row before new ones get 503
    max_sessions: int = 4  # live sessions per replica (each holds a row while it runs)
    window_frames: int | None = None  # rolling cache window in latent frames (None: max_num_frames')
    max_buffered: int = 4  # chunks a reader may fall behind before its stream is parked


@serve.deployment(
    name="Generator",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=16,
    max_queued_requests=4,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
)
class GeneratorDeployment:
    """One generator (DiT + VAE) per replica, shared by every stream on it through one ``BatchLoop``:
    HTTP streams, jobs and live sessions advance together, one batched model call per chunk step."""

    def __init__(
        self, source: ModelSourceArgs, device: str | None = None, torch_threads: int | None = None,
        timeout_s: float = 300.0, settings: GeneratorSettings | None = None, max_num_frames: int = 81,
    ) -> None:
        _set_threads(torch_threads)
        loaded = load_source(source)
        self.info_ = model_info(loaded)
        self.settings = settings or GeneratorSettings()
        self.timeout_s = timeout_s
        self.pipeline = build_generator_pipeline(loaded, device)
        # The window covers the longest request, so a bounded video sees its whole past as it would
        # alone; live sessions roll past it in constant memory.
        window = self.settings.window_frames or self.pipeline.geometry(max_num_frames).latent_frames
        self.loop = BatchLoop(
            lambda rows: ChunkBatcher(self.pipeline, max_streams=rows, window_frames=window),
            self.settings.max_streams, self.settings.max_waiting, self.settings.batching,
            self.settings.max_buffered,
        )
        self.window_frames = window
        self.sessions: set[str] = set()
        self._control = None
        self._pump: asyncio.Task | None = None

    def check_health(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {**self.loop.stats(), "sessions": len(self.sessions)}

    async def stream(self, spec: dict[str, Any], text: np.ndarray) -> AsyncIterator[dict[str, Any]]:
        """Chunks of one bounded video. Raises ``Overloaded`` (-> 503) when rows and queue are full; a
        cancelled request (client gone) leaves the batch at the next chunk boundary."""
        num_chunks = self.pipeline.geometry(spec["num_frames"]).num_chunks
        handle = self.loop.open(text, spec["seed"], num_chunks)
        deadline = time.perf_counter() + self.timeout_s
        try:
            async for item in handle:
                yield item
                if "error" in item:
                    return
                if time.perf_counter() > deadline and item["index"] + 1 < num_chunks:
                    yield {"error": {"code": "timeout", "type": "server_error", "message":
                                     f"generation exceeded the per-request limit of {self.timeout_s:g} s "
                                     f"after chunk {item['index'] + 1}/{num_chunks}"}}
                    return
        except asyncio.CancelledError:
            log.info("stream cancelled (client disconnected)")
            raise
        finally:
            handle.close()

    async def session(self, session_id: str, seed: int, text: np.ndarray, prompt: str,
                      num_chunks: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """An unbounded (or ``num_chunks``) live stream. The first item describes the session and
        carries the replica's control queue: prompt switches and pause / resume reach this replica
        (where the session's cache lives) through it, not through the load-balanced handle."""
        if len(self.sessions) >= self.settings.max_sessions:
            raise Overloaded(f"this replica already runs {self.settings.max_sessions} live sessions")
        handle = self.loop.open(text, seed, num_chunks, stream_id=session_id,
                                meta={"prompt_id": 0, "prompt": prompt})
        self.sessions.add(session_id)
        try:
            yield {"session": {"control": self._control_queue(), "window_frames": self.window_frames,
                               "batching": self.settings.batching}}
            async for item in handle:
                item["cache_nbytes"] = self.loop.stats()["cache_nbytes"]
                self._control_queue()  # restarts the pump if the session that started it has ended
                yield item
                if "error" in item:
                    return
        finally:
            handle.close()
            self.sessions.discard(session_id)

    def _control_queue(self):
        """This replica's control mailbox (a Ray queue actor it owns, created on the first session)."""
        if self._control is None:
            from ray.util.queue import Queue

            self._control = Queue(actor_options={"num_cpus": 0})
        if self._pump is None or self._pump.done():
            # Started from a request, the pump is cancelled with it when that request ends (Serve
            # cancels what a cancelled request spawned): running sessions restart it every chunk;
            # messages wait in the queue actor meanwhile.
            self._pump = asyncio.get_running_loop().create_task(self._apply_controls())
        return self._control

    async def _apply_controls(self) -> None:
        while True:
            session_id, op, args = await self._control.get_async()
            try:
                apply_control(self.loop, session_id, op, args)
            except Exception:  # noqa: BLE001 - a stale or bad message must not stop the pump
                log.exception("control message %s for %s failed", op, session_id)


def apply_control(loop: BatchLoop, session_id: str, op: str, args: tuple) -> None:
    """A control message from the ingress; sessions that already ended are ignored."""
    if session_id not in loop.entries:
        return
    if op == "prompt":
        text, meta = args
        loop.set_text(session_id, text, meta)
    elif op in ("pause", "resume", "close"):
        getattr(loop, op)(session_id)
    else:
        raise ValueError(f"unknown control op {op!r}; valid: ['prompt', 'pause', 'resume', 'close']")


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

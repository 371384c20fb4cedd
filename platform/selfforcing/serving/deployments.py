"""Thin Serve wrappers around the runners, the generation loop and the job store. Logic lives in the
plain classes; what crosses between deployments is typed (``messages``).

Default options here suit the embedded 2-CPU default (fractional CPUs: every replica would otherwise
reserve a whole CPU); ``serve/config.yaml`` overrides them (GPUs, autoscaling) per deployment name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import numpy as np
from ray import serve

from ..inference.batching import ChunkBatcher
from .admission import Capacity, Overloaded, default_kv_budget, kv_row_nbytes
from .batch_loop import BatchLoop
from .errors import APIError
from .jobs import JobStore
from .messages import (
    ChunkItem,
    ControlMessage,
    Refused,
    ReplicaStats,
    SessionRequest,
    StoreReply,
    StreamFailure,
    StreamItem,
    StreamOpened,
    StreamRequest,
)
from .model_source import ModelSourceArgs, load_source
from .runner import TextEncoderRunner, build_generator_pipeline, model_info
from .validation import ModelInfo

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

    def info(self) -> ModelInfo:
        """The served model's description. Asked here, not of a generator: generators may all be busy
        with long videos, the text encoder answers in milliseconds (both load the same source)."""
        return self.info_

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
    kv_memory_bytes: int | None = None  # K/V budget per replica (None: see ``default_kv_budget``)
    kv_memory_fraction: float = 0.8  # of the device memory free after loading, when no budget is given


@serve.deployment(
    name="Generator",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=200,
    max_queued_requests=-1,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
)
class GeneratorDeployment:
    """One generator (DiT + VAE) per replica, shared by every stream on it through one ``BatchLoop``:
    HTTP streams, jobs and live sessions advance together, one batched model call per chunk step.

    ``max_ongoing_requests`` is far above what the loop admits, so Serve passes every call through and
    the loop's admission is the only one that refuses (``Refused`` -> 503 in the ingress)."""

    def __init__(
        self, source: ModelSourceArgs, device: str | None = None, torch_threads: int | None = None,
        timeout_s: float = 300.0, settings: GeneratorSettings | None = None, max_num_frames: int = 81,
    ) -> None:
        _set_threads(torch_threads)
        loaded = load_source(source)
        self.info_ = model_info(loaded)
        self.settings = s = settings or GeneratorSettings()
        self.timeout_s = timeout_s
        self.pipeline = build_generator_pipeline(loaded, device)
        # The window covers the longest request, so a bounded video sees its whole past as it would
        # alone; live sessions roll past it in constant memory.
        window = s.window_frames or self.pipeline.geometry(max_num_frames).latent_frames
        row = kv_row_nbytes(self.pipeline.model, self.pipeline.geometry().tokens_per_frame, window)
        budget = s.kv_memory_bytes or default_kv_budget(self.pipeline.device, s.kv_memory_fraction)
        capacity = Capacity(s.max_streams, s.max_waiting, s.max_sessions, row, s.batching, budget)
        self.loop = BatchLoop(
            lambda rows: ChunkBatcher(self.pipeline, max_streams=rows, window_frames=window), capacity,
            s.max_buffered,
        )
        self.window_frames = window
        self._control = None
        self._pump: asyncio.Task | None = None
        log.info("generator replica: %d rows + %d waiting, K/V row %.3g MiB, budget %s -> admits %d streams",
                 s.max_streams, s.max_waiting, row / 2**20, budget, capacity.max_admitted)

    def check_health(self) -> None:
        return None

    def stats(self) -> ReplicaStats:
        return self.loop.stats()

    async def stream(self, request: StreamRequest, text: np.ndarray) -> AsyncIterator[StreamItem]:
        """``StreamOpened``, then the chunks of one bounded video; only ``Refused`` (-> 503) when the loop's
        admission refuses. A cancelled request (client gone) leaves the batch at the next chunk."""
        num_chunks = self.pipeline.geometry(request.num_frames).num_chunks
        try:
            handle = self.loop.open(text, request.seed, num_chunks)
        except Overloaded as exc:
            yield Refused(str(exc))
            return
        deadline = time.perf_counter() + self.timeout_s
        try:
            yield StreamOpened(handle.stream_id, handle.waiting, self.window_frames, self.settings.batching)
            async for item in handle:
                yield item
                if isinstance(item, StreamFailure):
                    return
                if time.perf_counter() > deadline and item.index + 1 < num_chunks:
                    yield StreamFailure("timeout", f"generation exceeded the per-request limit of "
                                        f"{self.timeout_s:g} s after chunk {item.index + 1}/{num_chunks}")
                    return
        except asyncio.CancelledError:  # the client went away (the ingress logs that once)
            log.debug("stream %s cancelled", handle.stream_id)
            raise
        finally:
            handle.close()

    async def session(self, request: SessionRequest, text: np.ndarray) -> AsyncIterator[StreamItem]:
        """An unbounded (or ``max_chunks``) live stream. The first item describes the session and carries
        the replica's control queue: prompt switches and pause / resume reach this replica (where the
        session's cache lives) through it, not through the load-balanced handle."""
        try:
            handle = self.loop.open(text, request.seed, request.max_chunks, stream_id=request.session_id,
                                    session=True)
        except Overloaded as exc:
            yield Refused(str(exc))
            return
        try:
            yield StreamOpened(handle.stream_id, handle.waiting, self.window_frames, self.settings.batching,
                               control=self._control_queue())
            async for item in handle:
                if isinstance(item, ChunkItem):
                    item = _with_cache(item, self.loop.cache_nbytes())
                self._control_queue()  # restarts the pump if the session that started it has ended
                yield item
                if isinstance(item, StreamFailure):
                    return
        except asyncio.CancelledError:  # the client went away (the ingress logs that once)
            log.debug("session %s cancelled", request.session_id)
            raise
        finally:
            handle.close()

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
        from ray.exceptions import RayError

        while True:
            try:
                message: ControlMessage = await self._control.get_async()
            except RayError:  # the request that started the pump was cancelled: a session restarts it
                return
            try:
                self.loop.control(message)
            except Exception:  # noqa: BLE001 - a stale or bad message must not stop the pump
                log.exception("control message %s failed", type(message).__name__)


def _with_cache(item: ChunkItem, nbytes: int) -> ChunkItem:
    from dataclasses import replace

    return replace(item, cache_nbytes=nbytes)


def _store_call(method: Callable[..., Any]) -> Callable[..., StoreReply]:
    """A job-store method as a deployment method: its value, or its ``APIError`` as data."""

    @wraps(method)
    def call(self: JobStoreDeployment, *args: Any) -> StoreReply:
        try:
            return StoreReply(value=method(self.store, *args))
        except APIError as err:
            return StoreReply(error=err.info())

    return call


@serve.deployment(name="JobStore", num_replicas=1, ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=256)
class JobStoreDeployment:
    """The single shared ``JobStore`` (must stay at one replica). Each method returns a ``StoreReply``
    so API errors cross the handle as data, not as Ray task errors. Its MP4s are deleted when the
    replica shuts down (Serve calls ``__del__`` on a graceful shutdown)."""

    def __init__(self, **store_kwargs: Any) -> None:
        self.store = JobStore(**store_kwargs)

    create = _store_call(JobStore.create)
    update = _store_call(JobStore.update)
    complete = _store_call(JobStore.complete)
    fail = _store_call(JobStore.fail)
    get = _store_call(JobStore.get)
    list = _store_call(JobStore.list)
    content = _store_call(JobStore.content)
    delete = _store_call(JobStore.delete)
    stats = _store_call(JobStore.stats)

    def __del__(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


class JobStoreClient:
    """Ingress-side proxy with the store's own methods: ``await client.get(id)`` -> value, or raises the
    store's ``APIError``."""

    def __init__(self, handle) -> None:
        self.handle = handle

    async def _call(self, response) -> Any:
        reply: StoreReply = await response
        if reply.error is not None:
            raise APIError.from_info(reply.error)
        return reply.value

    async def create(self, spec):
        return await self._call(self.handle.create.remote(spec))

    async def update(self, video_id: str, progress: float):
        return await self._call(self.handle.update.remote(video_id, progress))

    async def complete(self, video_id: str, content: bytes):
        return await self._call(self.handle.complete.remote(video_id, content))

    async def fail(self, video_id: str, code: str, message: str):
        return await self._call(self.handle.fail.remote(video_id, code, message))

    async def get(self, video_id: str):
        return await self._call(self.handle.get.remote(video_id))

    async def list(self, after: str | None, limit: int, order: str):
        return await self._call(self.handle.list.remote(after, limit, order))

    async def content(self, video_id: str) -> bytes:
        return await self._call(self.handle.content.remote(video_id))

    async def delete(self, video_id: str):
        return await self._call(self.handle.delete.remote(video_id))

    async def stats(self) -> dict[str, int]:
        return await self._call(self.handle.stats.remote())

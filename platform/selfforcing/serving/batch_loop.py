"""One generation loop per generator replica: every active stream advances one chunk per step.

HTTP streams, video jobs and live sessions all open a stream here and read its chunks from their own
``asyncio.Queue``. A single background task steps the ``ChunkBatcher`` (in a worker thread, so the
replica's event loop stays free for new requests, health checks and cancellation) while any stream is
active, and applies membership changes (join, leave, prompt switch, pause) between steps, which is the
only moment a batch may change. With ``batching=False`` every stream gets a batcher of its own and the
streams take turns, one model call per stream per chunk: the baseline that batching is measured against.

Plain asyncio, no Ray: the Serve deployment is a thin wrapper (see ``deployments.GeneratorDeployment``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..inference.batching import ChunkBatcher, ParkedStream

log = logging.getLogger(__name__)

END = None  # queue item that ends a stream


class Overloaded(Exception):
    """Every batch row and every waiting slot of this replica is taken (the ingress answers 503)."""


@dataclass
class _Entry:
    stream_id: str
    text: torch.Tensor
    seed: int
    num_chunks: int | None
    queue: asyncio.Queue
    meta: dict[str, Any] = field(default_factory=dict)  # echoed in every chunk (e.g. prompt_id)
    batcher: ChunkBatcher | None = None  # where it runs (None while waiting)
    parked: ParkedStream | None = None  # set while paused
    paused: bool = False
    throttled: bool = False  # parked because its consumer fell behind
    text_dirty: bool = False  # a prompt switch not yet applied to the batcher
    pending_meta: dict[str, Any] = field(default_factory=dict)  # meta that comes with that switch
    opened: float = field(default_factory=time.perf_counter)


class StreamHandle:
    """What a request holds: its chunks in order (``END`` after the last), and ``close`` to leave."""

    def __init__(self, loop: BatchLoop, entry: _Entry) -> None:
        self._loop, self._entry = loop, entry
        self.stream_id = entry.stream_id

    async def get(self) -> dict[str, Any] | None:
        """The next chunk dict, an ``{"error": ...}`` dict, or ``END``."""
        item = await self._entry.queue.get()
        self._loop._consumed(self._entry)
        return item

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self.get()
        if item is END:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._loop.close(self.stream_id)


class BatchLoop:
    """Admission, the stepping task and chunk delivery for one replica.

    ``make_batcher(rows)`` builds a ``ChunkBatcher`` with ``rows`` rows (the deployment passes one
    over its pipeline). ``max_streams`` rows generate at once; up to ``max_waiting`` more streams wait
    for a free row; beyond that ``open`` raises ``Overloaded``. Paused streams hold no row.
    """

    def __init__(
        self,
        make_batcher: Callable[[int], ChunkBatcher],
        max_streams: int = 8,
        max_waiting: int = 4,
        batching: bool = True,
        max_buffered: int = 4,
    ) -> None:
        if max_streams < 1 or max_waiting < 0:
            raise ValueError(f"max_streams={max_streams} must be >= 1 and max_waiting={max_waiting} >= 0")
        self.make_batcher, self.batching = make_batcher, batching
        self.max_streams, self.max_waiting, self.max_buffered = max_streams, max_waiting, max_buffered
        self.batchers: list[ChunkBatcher] = [make_batcher(max_streams)] if batching else []
        self.entries: dict[str, _Entry] = {}
        self.waiting: deque[str] = deque()
        self._task: asyncio.Task | None = None
        self._closing: list[_Entry] = []
        self._stepping = False
        self._ids = itertools.count()
        self.steps = 0
        self.last_batch = 0

    # ------------------------------------------------------------------ requests
    @property
    def running(self) -> int:
        return sum(len(b) for b in self.batchers)

    def stats(self) -> dict[str, Any]:
        """Loop counters and the cache size (constant for unbounded streams: the rolling window)."""
        return {
            "streams": len(self.entries), "running": self.running, "waiting": len(self.waiting),
            "paused": sum(e.paused for e in self.entries.values()), "steps": self.steps,
            "batch": self.last_batch, "batching": self.batching, "max_streams": self.max_streams,
            "cache_nbytes": sum(b.cache.nbytes for b in self.batchers),
            "window_frames": self.batchers[0].window_frames if self.batchers else None,
        }

    def open(
        self, text: np.ndarray | torch.Tensor, seed: int, num_chunks: int | None = None,
        stream_id: str | None = None, meta: dict[str, Any] | None = None,
    ) -> StreamHandle:
        """Start a stream of ``num_chunks`` chunks (None: until closed) from text embeddings [1, L, D]."""
        if self._load() >= self.max_streams + self.max_waiting:
            raise Overloaded(
                f"all {self.max_streams} generation rows and {self.max_waiting} waiting slots of this "
                "replica are taken; retry later"
            )
        stream_id = stream_id or f"s{next(self._ids)}"
        if stream_id in self.entries:
            raise ValueError(f"stream {stream_id!r} already exists")
        tensor = torch.tensor(np.asarray(text, dtype=np.float32))
        entry = _Entry(stream_id, tensor, int(seed), num_chunks, asyncio.Queue(), dict(meta or {}))
        self.entries[stream_id] = entry
        self.waiting.append(stream_id)
        self._kick()
        return StreamHandle(self, entry)


    def set_text(self, stream_id: str, text: np.ndarray | torch.Tensor, meta: dict[str, Any] | None = None) -> None:
        """Switch a stream's prompt from its next chunk on (the frame cache is kept). ``meta`` (e.g. a
        new ``prompt_id``) is echoed from the first chunk generated with the new text."""
        entry = self._get(stream_id)
        entry.text = torch.tensor(np.asarray(text, dtype=np.float32))
        entry.pending_meta.update(meta or {})
        entry.text_dirty = True
        self._kick()

    def pause(self, stream_id: str) -> None:
        """Stop generating for a stream, keeping its cache row aside; its row serves others."""
        self._get(stream_id).paused = True
        self._kick()

    def resume(self, stream_id: str) -> None:
        self._get(stream_id).paused = False
        self._kick()

    def close(self, stream_id: str) -> None:
        """Leave (client gone, finished reading, cancelled) at the next chunk boundary; idempotent."""
        entry = self.entries.pop(stream_id, None)
        if entry is None:
            return
        entry.queue.put_nowait(END)
        self._closing.append(entry)
        self._kick()

    # ------------------------------------------------------------------ internals
    def _get(self, stream_id: str) -> _Entry:
        if stream_id not in self.entries:
            raise KeyError(f"no active stream {stream_id!r}")
        return self.entries[stream_id]

    def _load(self) -> int:
        """Streams holding or waiting for a row (paused ones hold none)."""
        return sum(e.parked is None for e in self.entries.values())

    def _kick(self) -> None:
        """Apply pending changes now unless a step is running (then right after it), and make sure
        the stepping task runs while any stream has a row."""
        if self._stepping:
            return
        self._apply()
        if self.running and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _new_batcher(self) -> ChunkBatcher:
        if self.batching:
            return self.batchers[0]
        batcher = self.make_batcher(1)
        self.batchers.append(batcher)
        return batcher

    def _apply(self) -> None:
        """Membership changes, only between steps: leave, prompt switches, parks, resumes, admits."""
        for entry in self._closing:
            if entry.stream_id in self.waiting:
                self.waiting.remove(entry.stream_id)
            if entry.batcher is not None and entry.batcher.has(entry.stream_id):
                entry.batcher.remove(entry.stream_id)
        self._closing.clear()
        for entry in self.entries.values():
            if entry.parked is None and (entry.paused or entry.throttled) and self._running(entry):
                entry.parked = entry.batcher.park(entry.stream_id)
        for entry in self.entries.values():  # resumes first: they were admitted before the waiting
            if entry.parked is not None and not (entry.paused or entry.throttled) and self._free():
                batcher = self._new_batcher()
                batcher.unpark(entry.parked)
                entry.batcher, entry.parked = batcher, None
        while self.waiting and self._free():
            entry = self.entries[self.waiting.popleft()]
            entry.batcher = self._new_batcher()
            entry.batcher.add(entry.stream_id, entry.text, entry.seed, entry.num_chunks)
            entry.text_dirty = True  # takes its meta below
        for entry in self.entries.values():
            if entry.text_dirty and self._running(entry):
                entry.batcher.set_text(entry.stream_id, entry.text)
                entry.meta.update(entry.pending_meta)
                entry.pending_meta.clear()
                entry.text_dirty = False
        if not self.batching:
            self.batchers = [b for b in self.batchers if len(b)]

    @staticmethod
    def _running(entry: _Entry) -> bool:
        return entry.batcher is not None and entry.batcher.has(entry.stream_id)

    def _free(self) -> bool:
        return self.running < self.max_streams

    def _consumed(self, entry: _Entry) -> None:
        """Flow control: a stream whose reader fell ``max_buffered`` chunks behind is parked until
        the reader catches up, so a slow client neither grows memory nor holds a row."""
        if entry.throttled and entry.queue.qsize() < max(1, self.max_buffered // 2):
            entry.throttled = False
            self._kick()

    def _step_all(self) -> list[tuple[str, Any]]:
        """Worker thread: one chunk for every running stream (one call per batcher)."""
        out = []
        with torch.no_grad():
            for batcher in list(self.batchers):
                if n := len(batcher):  # before the step: finished streams leave during it
                    out += [(sid, chunk, n) for sid, chunk in batcher.step()]
        return out

    async def _run(self) -> None:
        while self.running:
            self._stepping = True
            try:
                results = await asyncio.to_thread(self._step_all)
            except Exception as exc:  # noqa: BLE001 - every stream of the failed step learns why
                log.exception("generation step failed")
                self._stepping = False
                self._fail_all(f"{type(exc).__name__}: {exc}")
                continue
            finally:
                self._stepping = False
            self.steps += 1
            self.last_batch = max((n for _, _, n in results), default=0)
            self._deliver(results)
            self._apply()
            await asyncio.sleep(0)  # let requests that arrived during the step run first

    def _deliver(self, results: list[tuple[str, Any, int]]) -> None:
        for sid, chunk, batch in results:
            entry = self.entries.get(sid)
            if entry is None:  # closed during the step: its chunk has no reader
                continue
            item = {
                **entry.meta, "index": chunk.index, "num_chunks": entry.num_chunks,
                "frame_start": chunk.frame_start, "frames": chunk.frames[0], "latent_start": chunk.latent_start,
                "seconds": round(chunk.seconds, 4), "elapsed": round(time.perf_counter() - entry.opened, 4),
                "batch": batch,
            }
            entry.queue.put_nowait(item)
            if entry.num_chunks is not None and chunk.index + 1 >= entry.num_chunks:
                entry.queue.put_nowait(END)  # the batcher removed it after its last chunk
                entry.batcher = None
                self.entries.pop(sid, None)
            elif entry.queue.qsize() >= self.max_buffered:
                entry.throttled = True

    def _fail_all(self, message: str) -> None:
        for sid in list(self.entries):
            self.entries[sid].queue.put_nowait(
                {"error": {"code": "generation_failed", "type": "server_error", "message": message}})
            self.close(sid)
        self.batchers = [self.make_batcher(self.max_streams)] if self.batching else []
        self._closing.clear()

"""One generation loop per generator replica: every active stream advances one chunk per step.

HTTP streams, video jobs and live sessions all open a stream here and read its chunks from their own
``asyncio.Queue``. A single background task steps the ``ChunkBatcher`` (in a worker thread, so the
replica's event loop stays free for new requests, health checks and cancellation) while any stream is
active, and applies membership changes (join, leave, prompt switch, pause) between steps, which is the
only moment a batch may change. With ``batching=False`` every stream gets a batcher of its own and the
streams take turns, one model call per stream per chunk: the baseline that batching is measured against.

``open`` asks ``Admission`` (the replica's one admission decision: rows, waiting slots, sessions and the
K/V memory of every row, parked ones included) before anything is allocated.

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

import numpy as np
import torch

from ..inference.batching import ChunkBatcher, ParkedStream
from .admission import Admission, Capacity, Load, Overloaded
from .messages import ChunkItem, ControlMessage, Pause, ReplicaStats, Resume, SetPrompt, StreamFailure

log = logging.getLogger(__name__)

END = None  # queue item that ends a stream
QueueItem = ChunkItem | StreamFailure | None

__all__ = ["END", "BatchLoop", "Overloaded", "StreamHandle"]


@dataclass
class _Entry:
    stream_id: str
    text: torch.Tensor
    seed: int
    num_chunks: int | None
    queue: asyncio.Queue
    session: bool = False  # a live session (counts against max_sessions)
    prompt_id: int = 0  # echoed in every chunk; changes with the prompt
    batcher: ChunkBatcher | None = None  # where it runs (None while waiting)
    parked: ParkedStream | None = None  # set while paused or throttled
    paused: bool = False
    throttled: bool = False  # parked because its consumer fell behind
    text_dirty: bool = False  # a prompt switch not yet applied to the batcher
    pending_prompt_id: int | None = None  # the prompt id that comes with that switch
    opened: float = field(default_factory=time.perf_counter)
    queued_for_row: bool = False  # at admission, every row was taken or promised to streams ahead


class StreamHandle:
    """What a request holds: its chunks in order (``END`` after the last), and ``close`` to leave."""

    def __init__(self, loop: BatchLoop, entry: _Entry) -> None:
        self._loop, self._entry = loop, entry
        self.stream_id = entry.stream_id

    @property
    def waiting(self) -> bool:
        """Admitted to a waiting slot: every row was taken (or promised) when it arrived."""
        return self._entry.queued_for_row

    @property
    def buffered(self) -> int:
        """Items generated and not yet read."""
        return self._entry.queue.qsize()

    async def get(self) -> QueueItem:
        """The next ``ChunkItem``, a ``StreamFailure``, or ``END``."""
        item = await self._entry.queue.get()
        self._loop._consumed(self._entry)
        return item

    def __aiter__(self):
        return self

    async def __anext__(self) -> ChunkItem | StreamFailure:
        item = await self.get()
        if item is END:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._loop.close(self.stream_id)


class BatchLoop:
    """Admission, the stepping task and chunk delivery for one replica.

    ``make_batcher(rows)`` builds a ``ChunkBatcher`` with ``rows`` rows (the deployment passes one over
    its pipeline). ``capacity.max_streams`` rows generate at once; up to ``max_waiting`` more streams
    wait for a free row; parked streams hold no row but count as admitted (their K/V is kept).
    """

    def __init__(
        self, make_batcher: Callable[[int], ChunkBatcher], capacity: Capacity, max_buffered: int = 4,
    ) -> None:
        self.make_batcher, self.capacity, self.batching = make_batcher, capacity, capacity.batching
        self.admission = Admission(capacity)
        self.max_streams, self.max_buffered = capacity.max_streams, max_buffered
        self.batchers: list[ChunkBatcher] = [make_batcher(self.max_streams)] if self.batching else []
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

    def load(self) -> Load:
        """Live streams by state. A closed stream leaves at the next step boundary, before any new stream
        gets a row or allocates anything, so it no longer counts (see ``closing``)."""
        live = self.entries.values()
        return Load(running=sum(self._running(e) for e in live),
                    waiting=sum(sid in self.entries for sid in self.waiting),
                    parked=sum(e.parked is not None for e in live), sessions=sum(e.session for e in live))

    @property
    def closing(self) -> int:
        """Closed streams still in a batch until the step in progress ends."""
        return len(self._closing)

    def cache_nbytes(self) -> int:
        """Bytes of the batch caches' frame K/V: constant for a batch once past the window."""
        return sum(b.cache.nbytes for b in self.batchers)

    def kv_nbytes(self) -> int:
        """K/V bytes held now, measured on the tensors: batch caches (frames and prompt) + parked rows."""
        total = 0
        for batcher in self.batchers:
            total += batcher.cache.nbytes
            total += sum(k.nbytes + v.nbytes for k, v in filter(None, batcher.cache.text_kv))
        for entry in self.entries.values():
            if entry.parked is not None and entry.parked.k is not None:
                total += entry.parked.k.nbytes + entry.parked.v.nbytes
        return total

    def stats(self) -> ReplicaStats:
        """Loop counters, load and memory (the cache is constant for unbounded streams: a rolling window)."""
        load, cap = self.load(), self.capacity
        return ReplicaStats(
            streams=len(self.entries), running=load.running, waiting=load.waiting, parked=load.parked,
            sessions=load.sessions, steps=self.steps, batch=self.last_batch, batching=self.batching,
            max_streams=self.max_streams, max_admitted=cap.max_admitted, cache_nbytes=self.cache_nbytes(),
            kv_nbytes=self.kv_nbytes(),
            row_nbytes=cap.row_nbytes, memory_budget=cap.memory_budget,
            window_frames=self.batchers[0].window_frames if self.batchers else None,
        )

    def open(
        self, text: np.ndarray | torch.Tensor, seed: int, num_chunks: int | None = None,
        stream_id: str | None = None, session: bool = False, prompt_id: int = 0,
    ) -> StreamHandle:
        """Admit a stream of ``num_chunks`` chunks (None: until closed) from text embeddings [1, L, D];
        raises ``Overloaded`` when the replica's admission refuses it."""
        stream_id = stream_id or f"s{next(self._ids)}"
        if stream_id in self.entries:
            raise ValueError(f"stream {stream_id!r} already exists")
        self.admission.check(self.load(), session)
        tensor = torch.tensor(np.asarray(text, dtype=np.float32))
        entry = _Entry(stream_id, tensor, int(seed), num_chunks, asyncio.Queue(), session, prompt_id)
        self.entries[stream_id] = entry
        self.waiting.append(stream_id)
        # Rows are assigned between steps; during a step the streams ahead of it may take the free ones.
        load = self.load()
        entry.queued_for_row = load.running + load.waiting > self.max_streams
        self._kick()
        return StreamHandle(self, entry)

    def control(self, message: ControlMessage) -> None:
        """A live session's control message; messages for sessions that already ended are ignored."""
        if message.session_id not in self.entries:
            return
        if isinstance(message, SetPrompt):
            self.set_text(message.session_id, message.text, message.prompt_id)
        elif isinstance(message, Pause):
            self.pause(message.session_id)
        elif isinstance(message, Resume):
            self.resume(message.session_id)
        else:
            raise TypeError(f"unknown control message {type(message).__name__}")

    def set_text(self, stream_id: str, text: np.ndarray | torch.Tensor, prompt_id: int | None = None) -> None:
        """Switch a stream's prompt from its next chunk on (the frame cache is kept). ``prompt_id`` is
        echoed from the first chunk generated with the new text."""
        entry = self._get(stream_id)
        entry.text = torch.tensor(np.asarray(text, dtype=np.float32))
        entry.pending_prompt_id = prompt_id if prompt_id is not None else entry.pending_prompt_id
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
            entry.parked = None  # a closed parked stream's K/V copy is freed with it
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
            entry.text_dirty = True  # takes its prompt id below
        for entry in self.entries.values():
            if entry.text_dirty and self._running(entry):
                entry.batcher.set_text(entry.stream_id, entry.text)
                if entry.pending_prompt_id is not None:
                    entry.prompt_id, entry.pending_prompt_id = entry.pending_prompt_id, None
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

    def _step_all(self) -> list[tuple[str, object, int]]:
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
            except Exception:  # noqa: BLE001 - every stream of the failed step learns that it failed
                log.exception("generation step failed")
                self._stepping = False
                self._fail_all()
                continue
            finally:
                self._stepping = False
            self.steps += 1
            self.last_batch = max((n for _, _, n in results), default=0)
            self._deliver(results)
            self._apply()
            await asyncio.sleep(0)  # let requests that arrived during the step run first

    def _deliver(self, results: list[tuple[str, object, int]]) -> None:
        for sid, chunk, batch in results:
            entry = self.entries.get(sid)
            if entry is None:  # closed during the step: its chunk has no reader
                continue
            entry.queue.put_nowait(ChunkItem(
                index=chunk.index, num_chunks=entry.num_chunks, frame_start=chunk.frame_start,
                latent_start=chunk.latent_start, frames=chunk.frames[0], seconds=round(chunk.seconds, 4),
                elapsed=round(time.perf_counter() - entry.opened, 4), batch=batch, prompt_id=entry.prompt_id,
            ))
            if entry.num_chunks is not None and chunk.index + 1 >= entry.num_chunks:
                entry.queue.put_nowait(END)  # the batcher removed it after its last chunk
                entry.batcher = None
                self.entries.pop(sid, None)
            elif entry.queue.qsize() >= self.max_buffered:
                entry.throttled = True

    def _fail_all(self) -> None:
        """The model step raised (logged above): end every stream with a failure clients may read."""
        failure = StreamFailure("generation_failed", "generation failed on the server; retry the request")
        for sid in list(self.entries):
            self.entries[sid].queue.put_nowait(failure)
            self.close(sid)
        self.batchers = [self.make_batcher(self.max_streams)] if self.batching else []
        self._closing.clear()

"""Decode chunk i while the DiT denoises chunk i+1, and bring frames to the host without stalling the DiT.

``BackgroundRollout`` runs the rollout (the DiT) in a worker thread, at most ``depth`` chunks ahead of
its consumer. Each chunk comes with a ``ChunkReady`` marker: on CUDA an event recorded on the DiT's
stream right after the chunk's kernels were queued, so the consumer can make *its* stream wait for
that chunk alone. The consumer decodes on a side CUDA stream (``decode_to_host``) and copies uint8
frames into pinned host memory with ``non_blocking=True``; only the consumer's thread waits for them
(``HostFrames.numpy``). The DiT thread never waits on the host: nothing it runs reads device memory.
On the CPU the same code runs with the decode in the consumer's thread, concurrent with the DiT thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..models.vae import StreamingDecoder, pixels_to_uint8

_END = object()


@dataclass
class ChunkReady:
    """Marks the point in the DiT's stream after which a chunk's latents are complete."""

    event: torch.cuda.Event | None  # None on the CPU: a chunk is complete when it is handed over

    @classmethod
    def record(cls, device: torch.device) -> ChunkReady:
        if device.type != "cuda":
            return cls(None)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        return cls(event)

    def wait_on(self, stream: torch.cuda.Stream | None) -> None:
        """Make ``stream`` (not the host) wait for the chunk."""
        if self.event is not None and stream is not None:
            stream.wait_event(self.event)

    def synchronize(self) -> None:
        """Block this thread until the chunk is complete (for timing a chunk without decoding it)."""
        if self.event is not None:
            self.event.synchronize()


@dataclass
class _Failure:
    error: BaseException


class BackgroundRollout:
    """Iterate ``chunks`` in a worker thread, ``depth`` items ahead of the consumer, in order.

    Items are ``(item, ChunkReady)``. An exception in the worker is re-raised by ``__next__``.
    ``close()`` (also on garbage collection of a finished or abandoned consumer) stops the worker after
    the chunk it is computing and waits for it, so the caller may reuse the KV cache right after.
    """

    def __init__(self, chunks: Iterator, device: torch.device, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1")
        self._chunks = chunks
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:  # the caller's current device
            self._device = torch.device("cuda", torch.cuda.current_device())
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="dit-rollout", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self._device.type == "cuda":
                torch.cuda.set_device(self._device)
            with torch.no_grad():
                for item in self._chunks:
                    if not self._put((item, ChunkReady.record(self._device))):
                        return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failure(exc))

    def __iter__(self) -> BackgroundRollout:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            self._thread.join()
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a worker waiting on a full queue
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._done = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # the worker has left the generator: finalise it here


@dataclass
class HostFrames:
    """uint8 frames [B, T, H, W, 3] on their way to the host; ``numpy()`` waits for this chunk only."""

    host: torch.Tensor | np.ndarray
    done: torch.cuda.Event | None = None

    def numpy(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host if isinstance(self.host, np.ndarray) else self.host.numpy()


def decode_to_host(
    decoder: StreamingDecoder,
    latents: torch.Tensor,
    ready: ChunkReady,
    stream: torch.cuda.Stream | None = None,
) -> HostFrames:
    """Decode ``latents`` [B, k, C, h, w] after ``ready``; on CUDA on ``stream``, into pinned memory.

    Nothing here blocks the host on CUDA: the side stream waits for the chunk's event, the copy to
    the pinned buffer is asynchronous, and ``HostFrames.numpy`` waits for its own event later.
    """
    if stream is None:
        ready.synchronize()
        with torch.no_grad():
            return HostFrames(pixels_to_uint8(decoder.decode_chunk(latents)).numpy())
    with torch.cuda.stream(stream), torch.no_grad():
        ready.wait_on(stream)
        latents.record_stream(stream)  # allocated on the DiT's stream, read on this one
        frames = pixels_to_uint8(decoder.decode_chunk(latents))
        host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
        host.copy_(frames, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    return HostFrames(host, done)

"""The two ways a request consumes a generator's chunks, written against plain async iterators so they
are testable without Ray: a live stream (bytes to the client as chunks arrive) and a video job (an MP4
assembled off the request path, with progress written to the job store).

Items are the typed ``messages`` (``StreamOpened`` first, then ``ChunkItem``s, maybe a ``StreamFailure``).
Unexpected exceptions are logged here with the request id and reach the client only as a generic
failure naming that id: a Ray task error's text (pids, addresses) is never shown.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..inference.video_io import Mp4Writer
from .encoders import StreamEncoder
from .messages import ChunkItem, StreamFailure, StreamOpened

log = logging.getLogger("ray.serve")


def cancel_quietly(chunks: Any) -> None:
    """Cancel a (handle) generator; cancelling a call that already failed may re-raise its error."""
    try:
        getattr(chunks, "cancel", lambda: None)()
    except Exception:  # noqa: BLE001 - the original error is already being handled
        pass


def chunk_meta(item: ChunkItem, started: float) -> dict[str, Any]:
    """The chunk's fields minus its frames, plus ``latency``: seconds since the request arrived."""
    meta = item.meta()
    meta["latency"] = round(time.perf_counter() - started, 4)
    return meta


def failure_for(exc: BaseException, request_id: str) -> StreamFailure:
    """What a client learns about an unexpected error: that it happened, and where to look."""
    log.error("request %s: generation failed", request_id, exc_info=exc)
    return StreamFailure("generation_failed", f"generation failed on the server (request id {request_id})")


async def stream_bytes(
    first: ChunkItem | StreamFailure | None,
    rest: AsyncIterator[ChunkItem | StreamFailure],
    encoder: StreamEncoder,
    header: dict[str, Any],
    started: float,
    deadline: float,
    cancel: Callable[[], None],
    request_id: str = "-",
) -> AsyncIterator[bytes]:
    """Encode ``first`` (None: the stream waits for a row and has no chunk yet) and then every item of
    ``rest`` as they come; ``cancel()`` the generation if the client disconnects (``CancelledError``) or
    the deadline passes. Errors after the status line was sent become the encoder's error record (ndjson)
    or an early end of stream."""
    finished = False
    try:
        yield encoder.header(header)
        item = first if first is not None else await _next(rest, deadline)
        frames = 0
        while item is not None:
            if isinstance(item, StreamFailure):
                yield encoder.error(item.error())
                finished = True
                return
            frames += item.num_frames
            yield await asyncio.to_thread(encoder.chunk, item.frames, chunk_meta(item, started))
            item = await _next(rest, deadline)
        finished = True
        yield encoder.footer({"frames": frames, "latency": round(time.perf_counter() - started, 4)})
    except asyncio.TimeoutError:
        yield encoder.error(StreamFailure("timeout", "the per-request time limit was reached").error())
    except Exception as exc:  # noqa: BLE001 - report to the client instead of cutting the stream
        yield encoder.error(failure_for(exc, request_id).error())
    finally:
        if not finished:
            cancel()  # client gone (CancelledError), time limit or failure: free the generator replica


async def _next(rest: AsyncIterator[Any], deadline: float) -> Any:
    return await asyncio.wait_for(anext(rest, None), timeout=max(deadline - time.perf_counter(), 0.001))


async def run_video_job(
    video_id: str,
    fps: int,
    open_stream: Callable[[], Awaitable[AsyncIterator[Any]]],
    store,
    deadline: float,
    retry_after_s: float,
    is_overload: Callable[[BaseException], bool],
    request_id: str = "-",
) -> None:
    """Generate a job's video: retry while the generators are full (the job stays ``queued``), write
    progress after each chunk, store the MP4 or mark the job failed. Stops if the job is deleted."""
    chunks = None
    finished = False
    try:
        while True:
            try:
                chunks = await open_stream()
                item = await anext(chunks, None)
                break
            except Exception as exc:  # noqa: BLE001
                if not is_overload(exc) or time.perf_counter() + retry_after_s > deadline:
                    raise
                await asyncio.sleep(retry_after_s)
        buffer = io.BytesIO()
        writer = Mp4Writer(buffer, fps)
        while item is not None:
            if isinstance(item, StreamFailure):
                await store.fail(video_id, item.code, item.message)
                finished = True
                return
            if isinstance(item, ChunkItem):
                await asyncio.to_thread(writer.add, item.frames)
                if await store.update(video_id, 100.0 * (item.index + 1) / item.num_chunks) is None:
                    return  # deleted while generating
            elif not isinstance(item, StreamOpened):
                raise TypeError(f"unexpected stream item {type(item).__name__}")
            item = await _next(chunks, deadline)
        await asyncio.to_thread(writer.close)
        finished = True
        await store.complete(video_id, buffer.getvalue())
    except asyncio.TimeoutError:
        await store.fail(video_id, "timeout", "the per-request time limit was reached")
    except Exception as exc:  # noqa: BLE001 - the job records that it failed, the log records why
        if is_overload(exc):
            await store.fail(video_id, "overloaded", "every generator stayed busy until the time limit")
        else:
            failure = failure_for(exc, request_id)
            await store.fail(video_id, failure.code, failure.message)
    finally:
        if not finished and chunks is not None:
            cancel_quietly(chunks)  # free the generator replica

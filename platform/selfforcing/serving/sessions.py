"""The two ways a request consumes a generator's chunks, written against plain async iterators so they
are testable without Ray: a live stream (bytes to the client as chunks arrive) and a video job (an MP4
assembled off the request path, with progress written to the job store)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..inference.video_io import Mp4Writer
from .encoders import StreamEncoder


def cancel_quietly(chunks: Any) -> None:
    """Cancel a (handle) generator; cancelling a call that already failed may re-raise its error."""
    try:
        getattr(chunks, "cancel", lambda: None)()
    except Exception:  # noqa: BLE001 - the original error is already being handled
        pass


def chunk_meta(item: dict[str, Any], started: float) -> dict[str, Any]:
    """The chunk's fields minus its frames, plus ``latency``: seconds since the request arrived."""
    meta = {k: v for k, v in item.items() if k != "frames"}
    meta["latency"] = round(time.perf_counter() - started, 4)
    return meta


async def stream_bytes(
    first: dict[str, Any],
    rest: AsyncIterator[dict[str, Any]],
    encoder: StreamEncoder,
    header: dict[str, Any],
    started: float,
    deadline: float,
    cancel: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Encode ``first`` and then every item of ``rest`` as they come; ``cancel()`` the generation if the
    client disconnects (``CancelledError``) or the deadline passes. Errors after the status line was
    sent become the encoder's error record (ndjson) or an early end of stream."""
    finished = False
    try:
        yield encoder.header(header)
        item: dict[str, Any] | None = first
        frames = 0
        while item is not None:
            if "error" in item:
                yield encoder.error(item["error"])
                finished = True
                return
            frames += len(item["frames"])
            yield await asyncio.to_thread(encoder.chunk, item["frames"], chunk_meta(item, started))
            remaining = deadline - time.perf_counter()
            try:
                item = await asyncio.wait_for(anext(rest, None), timeout=max(remaining, 0.001))
            except asyncio.TimeoutError:
                yield encoder.error({"code": "timeout", "type": "server_error",
                                     "message": "the per-request time limit was reached"})
                return
        finished = True
        yield encoder.footer({"frames": frames, "latency": round(time.perf_counter() - started, 4)})
    except Exception as exc:  # noqa: BLE001 - report to the client instead of cutting the stream
        yield encoder.error({"code": "generation_failed", "type": "server_error", "message": str(exc)})
    finally:
        if not finished:
            cancel()  # client gone (CancelledError), time limit or failure: free the generator replica


async def run_video_job(
    video_id: str,
    spec: dict[str, Any],
    open_stream: Callable[[], Awaitable[AsyncIterator[dict[str, Any]]]],
    store,
    deadline: float,
    retry_after_s: float,
    is_overload: Callable[[BaseException], bool],
) -> None:
    """Generate a job's video: retry while the generators are full (the job stays ``queued``), write
    progress after each chunk, store the MP4 or mark the job failed. Stops if the job is deleted."""
    chunks = None
    finished = False
    try:
        while True:
            try:
                chunks = await open_stream()
                first = await anext(chunks, None)
                break
            except Exception as exc:  # noqa: BLE001
                if not is_overload(exc) or time.perf_counter() + retry_after_s > deadline:
                    raise
                await asyncio.sleep(retry_after_s)
        buffer = io.BytesIO()
        writer = Mp4Writer(buffer, spec["fps"])
        item = first
        while item is not None:
            if "error" in item:
                raise RuntimeError(item["error"]["message"])
            await asyncio.to_thread(writer.add, item["frames"])
            if await store.update(video_id, 100.0 * (item["index"] + 1) / item["num_chunks"]) is None:
                return  # deleted while generating
            item = await asyncio.wait_for(anext(chunks, None), max(deadline - time.perf_counter(), 0.001))
        await asyncio.to_thread(writer.close)
        finished = True
        await store.complete(video_id, buffer.getvalue())
    except asyncio.TimeoutError:
        await store.fail(video_id, "timeout", "the per-request time limit was reached")
    except Exception as exc:  # noqa: BLE001 - the job records why it failed
        code = "overloaded" if is_overload(exc) else "generation_failed"
        await store.fail(video_id, code, f"{type(exc).__name__}: {exc}")
    finally:
        if not finished and chunks is not None:
            cancel_quietly(chunks)  # free the generator replica

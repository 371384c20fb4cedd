"""Stream and job consumption against fake generators: ordering, cancellation, failures, progress."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from selfforcing.inference.video_io import read_video
from selfforcing.serving.encoders import make_encoder
from selfforcing.serving.messages import ChunkItem
from selfforcing.serving.sessions import run_video_job, stream_bytes


class FakeChunks:
    """An async iterator of generator chunks with the handle generator's ``cancel``."""

    def __init__(self, n: int = 3, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.items = [ChunkItem(index=i, num_chunks=n, frame_start=i * 4, latent_start=i, seconds=0.0,
                                elapsed=0.0, batch=1,
                                frames=np.full((4 if i else 1, 32, 48, 3), (40 * i) % 256, np.uint8))
                      for i in range(n)]
        self.delay, self.fail_at, self.cancelled, self.i = delay, fail_at, False, 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.sleep(self.delay)
        if self.i == self.fail_at:
            raise RuntimeError("boom")
        if self.i >= len(self.items):
            raise StopAsyncIteration
        self.i += 1
        return self.items[self.i - 1]

    def cancel(self) -> None:
        self.cancelled = True


async def collect(chunks: FakeChunks, deadline_s: float = 10.0) -> list[dict]:
    now = time.perf_counter()
    body = stream_bytes(None, chunks, make_encoder("ndjson", 8), {}, now, now + deadline_s, chunks.cancel,
                        "req_test")
    return [json.loads(x) for x in b"".join([b async for b in body]).splitlines()]


def test_stream_in_order_and_not_cancelled():
    chunks = FakeChunks()
    lines = asyncio.run(collect(chunks))
    assert [x["object"] for x in lines] == ["video.stream"] + ["video.chunk"] * 3 + ["video.done"]
    assert lines[-1]["frames"] == 9 and not chunks.cancelled


def test_failure_and_timeout_end_the_stream_with_an_error_and_cancel():
    chunks = FakeChunks(fail_at=2)
    lines = asyncio.run(collect(chunks))
    # The client learns that generation failed and the request id, never the exception's text.
    error = lines[-1]["error"]
    assert lines[-1]["object"] == "error" and error["code"] == "generation_failed" and chunks.cancelled
    assert "boom" not in error["message"] and "req_test" in error["message"]
    slow = FakeChunks(delay=0.2)
    lines = asyncio.run(collect(slow, deadline_s=0.1))
    assert lines[-1]["error"]["code"] == "timeout" and slow.cancelled


def test_client_disconnect_cancels_generation():
    async def main() -> FakeChunks:
        chunks = FakeChunks(n=50, delay=0.01)
        first = await anext(chunks)
        now = time.perf_counter()
        body = stream_bytes(first, chunks, make_encoder("ndjson", 8), {}, now, now + 10, chunks.cancel)
        await anext(body)
        await anext(body)
        await body.aclose()  # what the server does when the client goes away
        return chunks

    assert asyncio.run(main()).cancelled


class FakeStore:
    def __init__(self) -> None:
        self.progress: list[float] = []
        self.result: tuple | None = None
        self.deleted = False

    async def update(self, video_id, progress):
        self.progress.append(progress)
        return None if self.deleted else {}

    async def complete(self, video_id, content):
        self.result = ("completed", content)

    async def fail(self, video_id, code, message):
        self.result = ("failed", code, message)


def run_job(store: FakeStore, opens: list, retry_after_s: float = 0.01, deadline_s: float = 5.0) -> None:
    async def open_stream():
        item = opens.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    asyncio.run(run_video_job("v", 8, open_stream, store, time.perf_counter() + deadline_s,
                              retry_after_s, lambda e: isinstance(e, OverflowError), "req_job"))


def test_job_writes_progress_and_a_decodable_mp4_after_retrying_overload():
    store = FakeStore()
    run_job(store, [OverflowError("full"), OverflowError("full"), FakeChunks()])
    assert store.progress == [100 / 3, 200 / 3, 100.0]
    assert store.result[0] == "completed" and read_video(store.result[1]).shape[0] == 9


def test_job_failures():
    store = FakeStore()
    run_job(store, [FakeChunks(fail_at=1)])
    assert store.result[:2] == ("failed", "generation_failed")
    assert "boom" not in store.result[2] and "req_job" in store.result[2]
    store = FakeStore()
    run_job(store, [OverflowError("full")] * 3, retry_after_s=0.05, deadline_s=0.08)
    assert store.result[:2] == ("failed", "overloaded")
    store, chunks = FakeStore(), FakeChunks()
    store.deleted = True
    run_job(store, [chunks])
    assert store.result is None and chunks.cancelled

"""The replica's generation loop without Ray: batched == unbatched per stream, joins and leaves between
chunks, prompt switches, pause / resume, slow readers, overload."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher
from selfforcing.serving.admission import Capacity
from selfforcing.serving.batch_loop import END, BatchLoop, Overloaded
from selfforcing.serving.messages import StreamFailure

WINDOW = 21  # latent frames: a whole 81-frame video, as a request alone would see it


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_config(load_config("tiny", overrides=["runtime.device=cpu"]), device="cpu")


@pytest.fixture(scope="module")
def texts(pipe):
    return [pipe.encode_prompts([p]).float().numpy() for p in ("a red ball", "a blue cube", "a green cat")]


def make_loop(pipe, batching=True, max_streams=8, max_waiting=4, max_sessions=4, max_buffered=4,
              window=WINDOW) -> BatchLoop:
    capacity = Capacity(max_streams, max_waiting, max_sessions, row_nbytes=0, batching=batching)
    return BatchLoop(lambda rows: ChunkBatcher(pipe, max_streams=rows, window_frames=window), capacity,
                     max_buffered)


async def read(handle, n=None, delay=0.0) -> list[dict]:
    out = []
    while n is None or len(out) < n:
        item = await handle.get()
        if item is END:
            break
        assert not isinstance(item, StreamFailure), item
        out.append(item)
        await asyncio.sleep(delay)
    return out


def frames(chunks) -> np.ndarray:
    return np.concatenate([c.frames for c in chunks]).astype(int)


def test_batched_streams_equal_unbatched_and_join_between_chunks(pipe, texts):
    async def run(batching: bool):
        loop = make_loop(pipe, batching)
        a = loop.open(texts[0], 1, num_chunks=4)
        first = await a.get()  # b joins a running batch
        b = loop.open(texts[1], 2, num_chunks=3)
        got_a, got_b = await asyncio.gather(read(a), read(b))
        return [first] + got_a, got_b, loop

    (a1, b1, batched), (a0, b0, unbatched) = asyncio.run(run(True)), asyncio.run(run(False))
    assert [c.index for c in a1] == [0, 1, 2, 3] and [c.index for c in b1] == [0, 1, 2]
    assert max(c.batch for c in b1) == 2 and max(c.batch for c in b0) == 1
    assert np.abs(frames(a1) - frames(a0)).max() <= 1 and np.abs(frames(b1) - frames(b0)).max() <= 1
    assert batched.stats().streams == 0 and unbatched.stats().running == 0


def test_prompt_switch_pause_resume_and_slow_reader_keep_the_stream_continuous(pipe, texts):
    async def run(switch: bool):
        loop = make_loop(pipe, max_buffered=2)
        other = loop.open(texts[2], 9, num_chunks=None)
        s = loop.open(texts[0], 5, num_chunks=None, prompt_id=0)
        got = await read(s, 2)
        if switch:
            loop.pause(s.stream_id)
            loop.set_text(s.stream_id, texts[1], prompt_id=1)
            await read(other, 3)  # the other stream keeps going while s is paused
            assert loop.stats().parked == 1
            loop.resume(s.stream_id)
            got += await read(s, 2, delay=0.3)  # a slow reader: parked, then continued
        else:
            loop.set_text(s.stream_id, texts[1], prompt_id=1)
            got += await read(s, 2)
        nbytes = loop.stats().cache_nbytes
        s.close()
        other.close()
        await asyncio.sleep(0.3)
        assert loop.stats().streams == 0 and nbytes > 0
        return got

    for switch in (False, True):
        got = asyncio.run(run(switch))
        ids = [c.prompt_id for c in got]
        assert [c.frame_start for c in got] == [0, 9, 21, 33] and [c.index for c in got] == [0, 1, 2, 3]
        assert ids == sorted(ids) and ids[0] == 0 and ids[-1] == 1  # the loop may run ahead of the reader
        # The same stream alone, switching at the same chunk: identical frames (pause, parking for the
        # slow reader and batching with another stream changed nothing).
        solo = ChunkBatcher(pipe, max_streams=1, window_frames=WINDOW)
        solo.add("s", torch.as_tensor(texts[0]), 5, None)
        ref = []
        for i in range(4):
            if i == ids.index(1):
                solo.set_text("s", torch.as_tensor(texts[1]))
            ref.append(solo.step()[0][1].frames[0])
        assert np.abs(frames(got) - np.concatenate(ref).astype(int)).max() <= 1, switch


def test_overload_and_close_free_rows(pipe, texts):
    async def run():
        loop = make_loop(pipe, max_streams=1, max_waiting=1)
        a = loop.open(texts[0], 1, None)
        b = loop.open(texts[1], 2, 2)
        assert (a.waiting, b.waiting) == (False, True)  # what the ingress tells the client at once
        with pytest.raises(Overloaded, match="1 generation rows and 1 waiting"):
            loop.open(texts[2], 3, 2)
        await read(a, 1)
        assert loop.stats().waiting == 1
        a.close()
        got = await asyncio.wait_for(read(b), 5)
        assert len(got) == 2 and loop.stats().streams == 0

    asyncio.run(run())


def test_unbounded_stream_past_the_window_keeps_the_cache_size(pipe, texts):
    async def run():
        loop = make_loop(pipe, window=6)
        s = loop.open(torch.as_tensor(texts[0]), 0, None)
        await read(s, 1)
        sizes = []
        for _ in range(5):
            c = (await read(s, 1))[0]
            sizes.append(loop.stats().cache_nbytes)
        s.close()
        return sizes, c

    sizes, last = asyncio.run(run())
    assert len(set(sizes)) == 1 and last.latent_start == 15

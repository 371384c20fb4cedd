"""The live-session protocol against a fake socket and a fake generator (no Ray)."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from selfforcing.inference.video_io import read_video
from selfforcing.serving.live import Disconnected, LiveError, LiveLimits, LiveSession
from selfforcing.serving.messages import ChunkItem


class FakeSocket:
    """Client messages are scripted as (delay_s, message); everything sent is recorded."""

    def __init__(self, script: list[tuple[float, object]]) -> None:
        self.script, self.sent, self.closed = list(script), [], None

    async def receive(self):
        while not self.script:
            await asyncio.sleep(0.01)
        delay, msg = self.script.pop(0)
        await asyncio.sleep(delay)
        if msg is Disconnected:
            raise Disconnected()
        return msg if isinstance(msg, (str, bytes)) else json.dumps(msg)

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000) -> None:
        self.closed = code

    def messages(self, kind: str) -> list[dict]:
        return [m for m in self.sent if isinstance(m, dict) and m["type"] == kind]


class FakeStream:
    def __init__(self, backend: FakeBackend) -> None:
        self.backend, self.prompt_id, self.paused, self.cancelled = backend, 0, False, False
        self.info = {"session_id": "live_x", "window_frames": 6}

    async def chunks(self):
        i = 0
        while self.backend.max_chunks is None or i < self.backend.max_chunks:
            await asyncio.sleep(0.02)
            if self.paused:
                continue
            n = 9 if i == 0 else 12
            yield ChunkItem(index=i, num_chunks=None, frame_start=0 if i == 0 else 9 + 12 * (i - 1),
                            latent_start=3 * i, frames=np.full((n, 32, 48, 3), 10 * i, np.uint8), seconds=0.01,
                            elapsed=0.0, batch=1, prompt_id=self.prompt_id, cache_nbytes=1000)
            i += 1

    async def set_prompt(self, prompt: str, prompt_id: int) -> None:
        self.prompt_id = prompt_id

    async def pause(self) -> None:
        self.paused = True

    async def resume(self) -> None:
        self.paused = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeBackend:
    def __init__(self, max_chunks=None, full=False) -> None:
        self.max_chunks, self.full, self.streams = max_chunks, full, []

    async def open(self, start, seed):
        if self.full:
            raise LiveError("overloaded", "busy", retry_after_s=2)
        self.streams.append(FakeStream(self))
        return self.streams[-1]


def run(script, backend=None, idle=5.0) -> tuple[FakeSocket, FakeBackend]:
    ws, backend = FakeSocket(script), backend or FakeBackend()
    session = LiveSession(ws, backend, LiveLimits(100, idle), lambda: 42, {"model": "m", "fps": 8})
    asyncio.run(asyncio.wait_for(session.run(), 10))
    return ws, backend


def test_session_streams_switches_pauses_and_closes():
    ws, backend = run([
        (0, {"type": "start", "prompt": "a ball"}), (0.1, {"type": "prompt", "prompt": "a cube"}),
        (0.1, {"type": "pause"}), (0.2, {"type": "stats"}), (0, {"type": "resume"}),
        (0.1, {"type": "close"}),
    ])
    session = ws.messages("session")[0]
    assert session["seed"] == 42 and session["format"] == "jpeg" and session["window_frames"] == 6
    chunks = ws.messages("chunk")
    assert [c["index"] for c in chunks] == list(range(len(chunks))) and len(chunks) >= 5
    assert {c["prompt_id"] for c in chunks} == {0, 1}
    assert sum("switch_latency" in c for c in chunks) == 1
    # After each header come its frames as binary JPEG messages.
    i = ws.sent.index(chunks[1])
    jpegs = ws.sent[i + 1 : i + 1 + chunks[1]["num_frames"]]
    assert all(isinstance(j, bytes) for j in jpegs) and Image.open(io.BytesIO(jpegs[0])).size == (48, 32)
    stats = ws.messages("stats")[0]
    assert stats["paused"] and stats["cache_nbytes"] == 1000
    assert [m["type"] for m in ws.sent if isinstance(m, dict)][-1] == "closed" and ws.closed == 1000
    assert backend.streams[0].cancelled


def test_errors_are_messages_and_the_connection_stays():
    ws, _ = run([
        (0, "not json"), (0, b"\x00"), (0, {"type": "dance"}), (0, {"type": "prompt", "prompt": "x"}),
        (0, {"type": "start", "prompt": ""}), (0, {"type": "start", "prompt": "x" * 101}),
        (0, {"type": "start", "prompt": "ok", "seed": -1}), (0, {"type": "start", "prompt": "ok", "format": "gif"}),
        (0, {"type": "ping"}), (0, Disconnected),
    ])
    codes = [m["error"]["code"] for m in ws.messages("error")]
    assert codes == ["invalid_json", "invalid_message", "unknown_message", "not_started", "empty_prompt",
                     "prompt_too_long", "invalid_value", "invalid_value"]
    assert ws.messages("pong") and ws.closed is None


def test_overload_then_retry_bounded_stream_done_and_idle_timeout():
    backend = FakeBackend(full=True)
    ws = FakeSocket([(0, {"type": "start", "prompt": "a"})])
    session = LiveSession(ws, backend, LiveLimits(100, 0.5), lambda: 1, {"fps": 8})

    async def main():
        task = asyncio.create_task(session.run())
        await asyncio.sleep(0.1)
        backend.full, backend.max_chunks = False, 2
        ws.script.append((0, {"type": "start", "prompt": "a", "format": "mp4"}))
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    error = ws.messages("error")[0]["error"]
    assert error["code"] == "overloaded" and error["retry_after_s"] == 2
    assert ws.messages("done")[0]["chunks"] == 2
    video = b"".join(m for m in ws.sent if isinstance(m, bytes))
    assert read_video(video).shape == (21, 32, 48, 3)  # the fMP4 pieces form one playable video
    assert ws.messages("error")[-1]["error"]["code"] == "idle_timeout" and ws.closed == 1000


NASTY = [  # (message, error code): what used to drop the connection (1006) or answer nothing
    ({"type": ["start"]}, "unknown_message"),
    ({"type": {"a": 1}}, "unknown_message"),
    ({"type": None}, "unknown_message"),
    ("[1, 2]", "invalid_message"),
    ('"ping"', "invalid_message"),
    ("[" * 20_000 + "]" * 20_000, "nesting_too_deep"),
    ('{"type": "start", "prompt": "x", "seed": ' + "9" * 5000 + "}", "invalid_value"),
    ('{"type": "start", "prompt": "a \\ud800 lone surrogate"}', "invalid_unicode"),
    ('{"type": "ping", "x": NaN}', "invalid_json"),
    ({"type": "start", "prompt": "x", "seed": True}, "invalid_value"),
    ({"type": "start", "prompt": "x", "max_chunks": 0}, "invalid_value"),
    ({"type": "start", "prompt": "x", "jpeg_quality": "high"}, "invalid_value"),
    ({"type": "start", "prompt": 5}, "invalid_value"),
    ({"type": "start"}, "missing_required_parameter"),
    ({"type": "ping", "extra": 1}, "unknown_parameter"),
    ({"type": "prompt"}, "missing_required_parameter"),
    ({"type": "pause"}, "not_started"),
]


def test_nasty_messages_before_and_during_a_stream_are_error_messages():
    script = [(0, m) for m, _ in NASTY] + [(0, {"type": "start", "prompt": "ok"}), (0.05, {"type": "ping"})]
    script += [(0, m) for m, _ in NASTY if _ != "not_started"] + [(0.05, {"type": "ping"}), (0, Disconnected)]
    ws, backend = run(script, FakeBackend(max_chunks=3))
    codes = [m["error"]["code"] for m in ws.messages("error")]
    expected = [c for _, c in NASTY] + [c for _, c in NASTY if c != "not_started"]
    assert codes == expected
    assert len(ws.messages("pong")) == 2 and ws.messages("session") and ws.closed is None
    for m in ws.messages("error"):  # bounded, valid text: a hostile value is never echoed whole
        assert len(m["error"]["message"]) <= 1000


def test_an_oversized_message_closes_with_1009():
    ws, _ = run([(0, {"type": "ping", "pad": "x" * 70_000}), (0, {"type": "ping"})])
    assert [m["error"]["code"] for m in ws.messages("error")] == ["message_too_large"]
    assert ws.messages("closed")[0]["reason"] == "message_too_large" and ws.closed == 1009
    assert not ws.messages("pong")  # nothing is read after the close


class BrokenBackend(FakeBackend):
    async def open(self, start, seed):
        raise RuntimeError("pid=1234 ip=10.0.0.7 actor=abc: boom")


def test_an_unexpected_error_is_a_generic_message_and_a_1011_close():
    ws = FakeSocket([(0, {"type": "start", "prompt": "x"})])
    session = LiveSession(ws, BrokenBackend(), LiveLimits(100, 5), lambda: 1, {"fps": 8}, "req_42")
    asyncio.run(asyncio.wait_for(session.run(), 10))
    error = ws.messages("error")[0]["error"]
    assert error["code"] == "internal_error" and "req_42" in error["message"]
    assert "boom" not in error["message"] and "10.0.0.7" not in error["message"]
    assert ws.closed == 1011


messages = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=10),
    st.builds(json.dumps, st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8)),
    st.builds(lambda kind, extra: json.dumps({"type": kind, **extra}),
              st.sampled_from(["start", "prompt", "pause", "resume", "stats", "ping", "dance"]),
              st.dictionaries(st.sampled_from(["prompt", "seed", "format", "max_chunks", "jpeg_quality", "x"]),
                              st.none() | st.booleans() | st.integers(-3, 200) | st.text(max_size=12),
                              max_size=3)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6))
def test_every_message_gets_an_answer_and_the_connection_stays(batch):
    ws, _ = run([(0, m) for m in batch] + [(0, {"type": "ping"}), (0.05, Disconnected)], FakeBackend(max_chunks=1))
    replies = [m for m in ws.sent if isinstance(m, dict) and m["type"] not in ("chunk", "done")]
    assert len(replies) >= len(batch) + 1 and replies[-1]["type"] == "pong"  # one or more per message
    assert ws.closed is None

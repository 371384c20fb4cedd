"""Live sessions over a WebSocket: the message protocol as a plain class (no Ray, no FastAPI).

Client -> server: JSON text messages ``{"type": ...}``: ``start`` (prompt, seed, format, max_chunks),
``prompt`` (switch the prompt mid-stream), ``pause``, ``resume``, ``stats``, ``ping``, ``close``.
Server -> client: JSON text messages (``session``, ``chunk``, ``prompt``, ``paused``, ``resumed``,
``stats``, ``pong``, ``done``, ``error``, ``closed``) and binary media: after each ``chunk`` header come
``num_frames`` binary messages, one JPEG each (``format: "jpeg"``), or one fragmented-MP4 piece
(``format: "mp4"``; the first piece carries the init segment). Errors are messages; the connection
stays open, except after ``idle_timeout`` and ``close`` (1000), a message over the size limit (1009) and an
unexpected server error (1011): every end is a close frame, never a dropped connection.
serve/README.md documents the protocol; ``live_messages`` holds the message catalogue and its parser.

``LiveSession`` talks to a ``LiveBackend`` (the ingress adapts the text-encoder and generator
deployments to it), so the protocol is tested with a fake backend and a fake socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..inference.video_io import encode_jpeg
from .encoders import Mp4Encoder
from .live_messages import (
    MAX_MESSAGE_CHARS,
    CloseMessage,
    LiveError,
    PauseMessage,
    PingMessage,
    PromptMessage,
    ResumeMessage,
    StartMessage,
    StatsMessage,
    parse_message,
)
from .messages import ChunkItem, StreamFailure

log = logging.getLogger("ray.serve")

__all__ = ["Disconnected", "LiveError", "LiveLimits", "LiveSession", "StartMessage"]


class Disconnected(Exception):
    """The client went away."""


class Transport(Protocol):
    async def receive(self) -> str | bytes: ...  # raises Disconnected
    async def send_text(self, text: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int = 1000) -> None: ...


class LiveStream(Protocol):
    """One generation on a replica: chunks until closed, and its control."""

    info: dict[str, Any]

    def chunks(self) -> AsyncIterator[ChunkItem | StreamFailure]: ...
    async def set_prompt(self, prompt: str, prompt_id: int) -> None: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    def cancel(self) -> None: ...


class LiveBackend(Protocol):
    async def open(self, start: StartMessage, seed: int) -> LiveStream: ...  # raises LiveError


@dataclass
class LiveLimits:
    max_prompt_chars: int = 2000
    idle_timeout_s: float = 60.0  # no client message (ping included) for this long closes the session


class LiveSession:
    """One WebSocket connection: at most one running stream at a time, restartable after it ends."""

    def __init__(self, transport: Transport, backend: LiveBackend, limits: LiveLimits,
                 new_seed: Callable[[], int], model: dict[str, Any] | None = None, request_id: str = "-") -> None:
        self.ws, self.backend, self.limits, self.new_seed = transport, backend, limits, new_seed
        self.model = model or {}
        self.request_id = request_id
        self.stream: LiveStream | None = None
        self.pump: asyncio.Task | None = None
        self.paused = False
        self.prompt_id = 0
        self.sent = 0
        self.seconds: list[float] = []
        self.last_cache_nbytes: int | None = None
        self._send_lock = asyncio.Lock()
        self._switch_sent: dict[int, float] = {}

    # ------------------------------------------------------------------ sending
    async def send(self, obj: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(obj, separators=(",", ":")))

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send(LiveError(code, message, **extra).body())

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        inbox: asyncio.Queue = asyncio.Queue()

        async def reader() -> None:
            try:
                while True:
                    await inbox.put(await self.ws.receive())
            except Disconnected:
                await inbox.put(Disconnected)

        read_task = asyncio.create_task(reader())
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(inbox.get(), timeout=self.limits.idle_timeout_s)
                except asyncio.TimeoutError:
                    await self.error("idle_timeout", f"no message from the client for "
                                     f"{self.limits.idle_timeout_s:g} s (send {{\"type\": \"ping\"}} to stay)")
                    await self.send({"type": "closed", "reason": "idle_timeout"})
                    await self.ws.close(1000)
                    return
                if raw is Disconnected:
                    log.info("live session %s: the client disconnected", self.request_id)
                    return
                if not await self.handle(raw):
                    return
        except Disconnected:
            return
        except Exception:  # noqa: BLE001 - a bug must end in a close frame, not a dropped connection
            log.exception("live session %s failed", self.request_id)
            await self._close_after_error("internal_error", "the server had an error in this session "
                                          f"(request id {self.request_id}); start a new one", 1011)
        finally:
            read_task.cancel()
            await self._stop()

    async def _close_after_error(self, code: str, message: str, close_code: int) -> None:
        try:
            await self.error(code, message)
            await self.send({"type": "closed", "reason": code})
        except Exception:  # noqa: BLE001 - the client may be gone already; the close below still runs
            pass
        await self.ws.close(close_code)

    async def handle(self, raw: str | bytes) -> bool:
        """One client message; False once the session is closed."""
        if len(raw) > MAX_MESSAGE_CHARS:
            await self._close_after_error("message_too_large", f"a message may have at most {MAX_MESSAGE_CHARS} "
                                          "characters", 1009)
            return False
        try:
            msg = parse_message(raw)
            handler = self._handlers[type(msg)]
            return await handler(self, msg) is not False
        except LiveError as err:
            await self.send(err.body())
            return True

    # ------------------------------------------------------------------ messages
    def _check_prompt(self, prompt: str) -> str:
        if not prompt.strip():
            raise LiveError("empty_prompt", "'prompt' must be a non-empty string", param="prompt")
        if len(prompt) > self.limits.max_prompt_chars:
            raise LiveError("prompt_too_long", f"'prompt' has {len(prompt)} characters; the maximum is "
                            f"{self.limits.max_prompt_chars}", param="prompt")
        return prompt.strip()

    async def _start(self, start: StartMessage) -> None:
        if self.stream is not None:
            raise LiveError("already_started", "a stream is running; send 'close' or wait for 'done'")
        start = start.model_copy(update={"prompt": self._check_prompt(start.prompt)})
        seed = start.seed if start.seed is not None else self.new_seed()
        self.stream = await self.backend.open(start, seed)
        self.paused, self.prompt_id, self.sent, self.seconds = False, 0, 0, []
        await self.send({"type": "session", **self.model, **self.stream.info, "seed": seed,
                         "format": start.format, "max_chunks": start.max_chunks, "prompt": start.prompt,
                         "prompt_id": 0, "idle_timeout_s": self.limits.idle_timeout_s})
        self.pump = asyncio.create_task(self._pump(self.stream, start))

    async def _prompt(self, msg: PromptMessage) -> None:
        if self.stream is None:
            raise LiveError("not_started", "send 'start' first")
        prompt = self._check_prompt(msg.prompt)
        self.prompt_id += 1
        self._switch_sent[self.prompt_id] = time.perf_counter()
        await self.stream.set_prompt(prompt, self.prompt_id)
        await self.send({"type": "prompt", "prompt_id": self.prompt_id, "prompt": prompt})

    async def _pause(self, msg: PauseMessage) -> None:
        if self.stream is None:
            raise LiveError("not_started", "send 'start' first")
        await self.stream.pause()
        self.paused = True
        await self.send({"type": "paused"})

    async def _resume(self, msg: ResumeMessage) -> None:
        if self.stream is None:
            raise LiveError("not_started", "send 'start' first")
        await self.stream.resume()
        self.paused = False
        await self.send({"type": "resumed"})

    async def _stats(self, msg: StatsMessage) -> None:
        s = sorted(self.seconds)
        await self.send({"type": "stats", "running": self.stream is not None, "paused": self.paused,
                         "chunks": self.sent, "prompt_id": self.prompt_id,
                         "median_chunk_seconds": s[len(s) // 2] if s else None,
                         "cache_nbytes": self.last_cache_nbytes})

    async def _ping(self, msg: PingMessage) -> None:
        await self.send({"type": "pong"})

    async def _close(self, msg: CloseMessage) -> bool:
        await self._stop()
        await self.send({"type": "closed", "reason": "client"})
        await self.ws.close(1000)
        return False

    _handlers: dict[type, Callable[..., Any]] = {
        StartMessage: _start, PromptMessage: _prompt, PauseMessage: _pause, ResumeMessage: _resume,
        StatsMessage: _stats, PingMessage: _ping, CloseMessage: _close,
    }

    # ------------------------------------------------------------------ media
    async def _pump(self, stream: LiveStream, start: StartMessage) -> None:
        """Chunks -> a ``chunk`` header + media messages, until the stream ends or fails."""
        mp4 = Mp4Encoder(int(self.model.get("fps", 8))) if start.format == "mp4" else None
        last = time.perf_counter()
        try:
            async for item in stream.chunks():
                if isinstance(item, StreamFailure):
                    await self.send({"type": "error", "error": item.error()})
                    break
                frames = item.frames
                media = await asyncio.to_thread(_encode, frames, mp4, start.jpeg_quality)
                now = time.perf_counter()
                pid = item.prompt_id
                header = {"type": "chunk", "index": item.index, "frame_start": item.frame_start,
                          "num_frames": len(frames), "prompt_id": pid, "seconds": item.seconds,
                          "interval": round(now - last, 4), "batch": item.batch,
                          "cache_nbytes": item.cache_nbytes, "messages": len(media)}
                if pid in self._switch_sent:  # first chunk with a new prompt: how long the switch took
                    header["switch_latency"] = round(now - self._switch_sent.pop(pid), 4)
                last = now
                async with self._send_lock:
                    await self.ws.send_text(json.dumps(header, separators=(",", ":")))
                    for piece in media:
                        await self.ws.send_bytes(piece)
                self.sent += 1
                self.seconds.append(item.seconds or 0.0)
                self.last_cache_nbytes = item.cache_nbytes
            else:
                # fMP4: the encoder holds back its last frames until closed; they follow "done".
                tail = await asyncio.to_thread(mp4.footer, {}) if mp4 is not None else b""
                async with self._send_lock:
                    await self.ws.send_text(json.dumps({"type": "done", "chunks": self.sent,
                                                        "messages": int(bool(tail))}))
                    if tail:
                        await self.ws.send_bytes(tail)
        except Disconnected:
            log.info("live session %s: the client disconnected", self.request_id)
        except Exception:  # noqa: BLE001 - tell the client (no internals), keep the connection
            log.exception("live session %s: stream failed", self.request_id)
            await self.error("generation_failed", f"generation failed on the server (request id "
                             f"{self.request_id}); send 'start' to begin again")
        finally:
            stream.cancel()
            if self.stream is stream:
                self.stream = None

    async def _stop(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
            try:
                await self.pump
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass


def _encode(frames, mp4: Mp4Encoder | None, quality: int) -> list[bytes]:
    if mp4 is not None:
        return [mp4.chunk(frames, {})]
    return [encode_jpeg(f, quality) for f in frames]


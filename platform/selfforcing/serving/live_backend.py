"""The Serve edge of live sessions: ``LiveBackend`` over the text-encoder and generator handles, and
the Starlette WebSocket as a ``Transport``. The protocol itself is ``live.LiveSession``."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .live import Disconnected, LiveError, StartMessage
from .messages import (
    ChunkItem,
    Pause,
    Refused,
    Resume,
    SessionRequest,
    SetPrompt,
    StreamFailure,
    StreamOpened,
)

log = logging.getLogger("ray.serve")


class WebSocketTransport:
    """Starlette's WebSocket as the session's transport (a disconnect becomes ``Disconnected``)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes:
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise Disconnected() from exc
        if msg["type"] == "websocket.disconnect":
            raise Disconnected()
        return msg["text"] if msg.get("text") is not None else (msg.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise Disconnected() from exc

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise Disconnected() from exc

    async def close(self, code: int = 1000) -> None:
        try:
            await self.ws.close(code)
        except RuntimeError:
            pass


class ServeLiveStream:
    """A running session on one generator replica; control goes to that replica's mailbox."""

    def __init__(self, session_id: str, response, control, info: dict[str, Any], encode) -> None:
        self.session_id, self.response, self.control, self.info = session_id, response, control, info
        self.encode = encode

    async def chunks(self) -> AsyncIterator[ChunkItem | StreamFailure]:
        """The session's items; Serve cancelling the call (the client went away) is ``Disconnected``."""
        from ray.serve.exceptions import RequestCancelledError

        try:
            async for item in self.response:
                yield item
        except RequestCancelledError:
            raise Disconnected() from None

    async def set_prompt(self, prompt: str, prompt_id: int) -> None:
        text = await self.encode(prompt)
        await self.control.put_async(SetPrompt(self.session_id, text, prompt_id))

    async def pause(self) -> None:
        await self.control.put_async(Pause(self.session_id))

    async def resume(self) -> None:
        await self.control.put_async(Resume(self.session_id))

    def cancel(self) -> None:
        try:
            self.response.cancel()  # the replica's generator sees CancelledError and leaves the batch
        except Exception:  # noqa: BLE001 - already finished
            pass


class ServeLiveBackend:
    """Opens sessions: prompt embedding from the text encoder, then a streaming ``session`` call."""

    def __init__(self, text_encoder, generator, is_overload: Callable[[BaseException], bool],
                 retry_after_s: float, request_id: str = "-") -> None:
        self.text_encoder, self.generator = text_encoder, generator
        self.is_overload, self.retry_after_s, self.request_id = is_overload, retry_after_s, request_id

    async def encode(self, prompt: str):
        return await self.text_encoder.encode.remote(prompt)

    async def open(self, start: StartMessage, seed: int) -> ServeLiveStream:
        session_id = f"live_{secrets.token_hex(8)}"
        text = await self.encode(start.prompt)
        request = SessionRequest(session_id, seed, start.max_chunks)
        response = self.generator.options(stream=True).session.remote(request, text)
        try:
            opened = await anext(response)
        except Exception as exc:
            if self.is_overload(exc):
                raise LiveError("overloaded", "all generators are busy with other streams; retry later",
                                retry_after_s=self.retry_after_s) from None
            log.error("live session %s (request %s) could not start", session_id, self.request_id, exc_info=exc)
            raise LiveError("generation_failed", f"the session could not start (request id {self.request_id})"
                            ) from None
        if isinstance(opened, Refused):
            raise LiveError("overloaded", "all generators are busy with other streams; retry later",
                            retry_after_s=self.retry_after_s)
        if not isinstance(opened, StreamOpened):
            raise TypeError(f"a session began with {type(opened).__name__}")
        info = {"session_id": session_id, "window_frames": opened.window_frames, "batching": opened.batching}
        return ServeLiveStream(session_id, response, opened.control, info, self.encode)

"""The ingress's last line: anything unexpected becomes a generic answer, never a traceback or a drop.

``RequestGuard`` is pure ASGI middleware around the FastAPI app (outside its exception handlers):

- HTTP: an exception that escapes a route (a bug, a Ray task error from another deployment) is logged
  with its traceback and the request id, and answered ``500`` with OpenAI's envelope naming only that
  request id. If the response had already started (a stream), the stream ends and the log says why.
- WebSocket: an escaping exception closes the socket with a close frame (1011, "internal error"), or
  refuses the handshake if it had not been accepted: the client never sees an abnormal closure (1006).

A client that goes away is normal, not an error: Serve reports it by raising ``TaskCancelledError`` from
``receive`` (Starlette: ``ClientDisconnect``); that is one INFO line, without a traceback.

The request id is Serve's (``x-request-id``, which Serve's proxy sets and every replica's log lines of
the request carry), or a new one when the app runs outside Serve; responses carry it as
``X-Request-ID`` either way.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect

from .errors import internal_error_body, new_request_id, safe_text

log = logging.getLogger("ray.serve")


def _disconnects() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [ClientDisconnect]
    try:  # the guard runs without Ray too (tests, plain uvicorn)
        from ray.exceptions import TaskCancelledError
        from ray.serve.exceptions import RequestCancelledError

        kinds += [TaskCancelledError, RequestCancelledError]
    except ImportError:
        pass
    return tuple(kinds)


DISCONNECTS = _disconnects()

REQUEST_ID_HEADER = b"x-request-id"


def request_id_of(scope: dict[str, Any]) -> str:
    """The request id the guard stored in the scope (``request.scope`` / ``websocket.scope``)."""
    return scope.get("state", {}).get("request_id", "-")


class RequestGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER)
        request_id = safe_text(given.decode("latin-1"), 64) if given else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        state = {"started": False, "closed": False}

        async def guarded_send(message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["started"] = True
                if not given:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif kind in ("websocket.accept", "websocket.http.response.start"):
                state["started"] = True
            elif kind == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except DISCONNECTS:
            log.info("request %s %s: the client disconnected", request_id, scope.get("path", ""))
        except Exception:  # noqa: BLE001 - the point of this class: log it, answer generically
            log.exception("request %s %s failed", request_id, scope.get("path", ""))
            await self._answer(scope, send, state, request_id)

    @staticmethod
    async def _answer(scope, send, state: dict[str, bool], request_id: str) -> None:
        try:
            if scope["type"] == "websocket":
                if not state["closed"]:
                    await send({"type": "websocket.close", "code": 1011, "reason": "internal error"})
                return
            if state["started"]:
                return  # a streaming response: its end tells the client; the log has the cause
            body = json.dumps(internal_error_body(request_id)).encode()
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode())]})
            await send({"type": "http.response.body", "body": body})
        except Exception:  # noqa: BLE001 - the client is gone; nothing more to say
            log.info("request %s: could not send the error answer (client gone)", request_id)

"""RequestGuard around a real FastAPI app (in-process ASGI): an unexpected error is a generic 500 envelope
with the request id (the details only in the log), a stream that fails ends, a WebSocket closes 1011."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from selfforcing.serving.errors import APIError
from selfforcing.serving.guard import RequestGuard, request_id_of

SECRET = "RayTaskError pid=4242 ip=10.1.2.3 actor_id=deadbeef \x1b[31m"


def make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestGuard)

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        from fastapi.responses import JSONResponse

        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/boom")
    async def boom():
        raise RuntimeError(SECRET)

    @app.get("/bad")
    async def bad():
        raise APIError(400, "bad value", param="x", code="invalid_value")

    @app.get("/id")
    async def ident(request: __import__("fastapi").Request):
        return {"id": request_id_of(request.scope)}

    @app.get("/gone")
    async def gone():
        from starlette.requests import ClientDisconnect

        raise ClientDisconnect()

    @app.get("/stream")
    async def stream():
        async def body():
            yield b"first\n"
            raise RuntimeError(SECRET)

        return StreamingResponse(body())

    @app.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        await socket.receive_text()
        raise RuntimeError(SECRET)

    return app


@pytest.fixture
def client():
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


def test_unexpected_error_is_a_generic_500_with_the_request_id(client, caplog):
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        r = client.get("/boom")
    assert r.status_code == 500
    error = r.json()["error"]
    request_id = r.headers["x-request-id"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert request_id in error["message"] and "pid" not in r.text and "10.1.2.3" not in r.text
    assert "pid=4242 ip=10.1.2.3" in caplog.text and request_id in caplog.text  # the details: in the log


def test_the_given_request_id_is_used_and_api_errors_pass(client):
    assert client.get("/id", headers={"x-request-id": "abc-123"}).json() == {"id": "abc-123"}
    r = client.get("/bad")
    assert r.status_code == 400 and r.json()["error"]["param"] == "x" and r.headers["x-request-id"]


def test_a_stream_that_fails_ends_without_internal_details(client):
    r = client.get("/stream")
    assert r.status_code == 200 and r.content.startswith(b"first\n") and b"pid" not in r.content


def test_a_websocket_error_closes_with_1011(client):
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1011


def test_a_client_disconnect_is_one_info_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        try:
            client.get("/gone")
        except Exception:  # noqa: BLE001 - the test client may complain that no response came: none is due
            pass
    records = [r for r in caplog.records if r.name == "ray.serve"]
    assert [r.levelno for r in records] == [logging.INFO] and "disconnected" in records[0].getMessage()
    assert records[0].exc_info is None

"""Errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class APIError(Exception):
    """An error answered to the client; ``status`` is the HTTP status, the rest goes in the envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 for a request the server will never accept as it is."""
    return APIError(400, message, "invalid_request_error", param, code)


def not_found(what: str, ident: str, param: str = "video_id") -> APIError:
    return APIError(404, f"{what} {ident!r} not found (it may have expired or been deleted)",
                    "invalid_request_error", param, "not_found")


def overloaded(message: str, retry_after_s: float) -> APIError:
    """A 503 the client should retry after ``retry_after_s`` seconds (sent as ``Retry-After``)."""
    seconds = max(1, round(retry_after_s))
    return APIError(503, message, "server_error", None, "overloaded",
                    headers={"Retry-After": str(seconds), "openai-poll-after-ms": str(seconds * 1000)})


def unauthorized(message: str) -> APIError:
    return APIError(401, message, "invalid_request_error", None, "invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def from_validation_error(err: ValidationError) -> APIError:
    """The first pydantic error as a 400 naming the parameter and what was wrong with it."""
    first = err.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return invalid(f"Unknown parameter: {param!r}.", param, "unknown_parameter")
    if first["type"] == "missing":
        return invalid(f"Missing required parameter: {param!r}.", param, "missing_required_parameter")
    value = first.get("input")
    return invalid(f"Invalid value for {param!r}: {value!r} ({first['msg']}).", param)

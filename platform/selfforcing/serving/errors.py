"""Errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Everything a client reads in an error is built here, so two rules hold everywhere: values echoed back
are shortened and made valid Unicode (a hostile value cannot make the error itself fail or grow), and
internal details (exception texts, Ray task errors with pids and IPs) never appear: an unexpected error
is answered with a generic message and a request id that points to the server log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

MAX_ECHO_CHARS = 80  # a client value quoted in an error message
MAX_MESSAGE_CHARS = 1000


def safe_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` shortened to ``limit`` characters and encodable as UTF-8 (lone surrogates escaped)."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def echo(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """A client's value for an error message: its repr, bounded and Unicode-safe (never converts a
    giant int to text: Python refuses beyond 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    if isinstance(value, str | bytes) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of the head only: repr of the whole would cost its length
    return safe_text(repr(value), limit)


def new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class ErrorInfo:
    """An API error as plain data: what crosses a deployment boundary (exceptions would arrive wrapped
    in Ray's task error, with the replica's pid and address in its text)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


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

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.status, self.message, self.type, self.param, self.code, dict(self.headers))

    @classmethod
    def from_info(cls, info: ErrorInfo) -> APIError:
        return cls(info.status, info.message, info.type, info.param, info.code, dict(info.headers))


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": safe_text(message), "type": type,
                      "param": None if param is None else safe_text(param, MAX_ECHO_CHARS), "code": code}}


def internal_error_body(request_id: str) -> dict[str, Any]:
    """The generic 500 envelope: no detail but the request id the server log has the details under."""
    return error_body(f"The server had an error while processing your request (request id {request_id}). "
                      "Retry it; if the error persists, report the request id.", "server_error", None,
                      "internal_error")


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 for a request the server will never accept as it is."""
    return APIError(400, message, "invalid_request_error", param, code)


def unsupported_media(message: str, code: str) -> APIError:
    """415: a Content-Type or charset the server does not read."""
    return APIError(415, message, "invalid_request_error", None, code)


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than {limit} bytes.", "invalid_request_error", None,
                    "request_too_large")


def not_found(what: str, ident: str, param: str = "video_id") -> APIError:
    return APIError(404, f"{what} {echo(ident)} not found (it may have expired or been deleted)",
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
    """The first pydantic error as a 400 naming the parameter, the value and what was wrong with it."""
    first = err.errors(include_url=False)[0]
    # loc: (field, union member...): request bodies are flat, the field is the parameter
    param = str(first["loc"][0]) if first["loc"] else None
    if first["type"] == "extra_forbidden":
        return invalid(f"Unknown parameter: {echo(param)}.", param, "unknown_parameter")
    if first["type"] == "missing":
        return invalid(f"Missing required parameter: {echo(param)}.", param, "missing_required_parameter")
    return invalid(f"Invalid value for {echo(param)}: {echo(first.get('input'))} ({first['msg']}).", param)

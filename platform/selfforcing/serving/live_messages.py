"""The live-session message catalogue (client -> server) as typed models, and its parser.

Every client message is parsed by ``parse_message`` before anything acts on it: bounded JSON
(``jsonsafe``: depth, number length, valid Unicode), then one model per ``type`` with bounded fields and
no unknown keys. What fails becomes a ``LiveError`` whose code and ``param`` tell the client what to fix;
the fuzz tests feed this catalogue (``MESSAGE_MODELS``) to the running server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import jsonsafe
from .errors import echo, safe_text
from .schemas import Seed, Text, bounded_int

MAX_MESSAGE_CHARS = 64 * 1024  # longer messages close the session with 1009 (message too big)


class LiveError(Exception):
    """An error the client receives as an ``error`` message."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, safe_text(message), extra

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"code": self.code, "message": self.message, **self.extra}}


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartMessage(_Message):
    """``{"type": "start", ...}``: opens a stream."""

    type: Literal["start"]
    prompt: Text
    seed: Seed | None = None
    format: Literal["jpeg", "mp4"] = "jpeg"
    max_chunks: bounded_int(1, 1_000_000) | None = Field(None, description="stop after this many chunks "
                                                         "(default: never)")
    jpeg_quality: bounded_int(10, 100) = 85


class PromptMessage(_Message):
    """``{"type": "prompt", "prompt"}``: switch the prompt from the next chunk the replica starts."""

    type: Literal["prompt"]
    prompt: Text


class PauseMessage(_Message):
    type: Literal["pause"]


class ResumeMessage(_Message):
    type: Literal["resume"]


class StatsMessage(_Message):
    type: Literal["stats"]


class PingMessage(_Message):
    type: Literal["ping"]


class CloseMessage(_Message):
    type: Literal["close"]


MESSAGE_MODELS: dict[str, type[_Message]] = {
    "start": StartMessage, "prompt": PromptMessage, "pause": PauseMessage, "resume": ResumeMessage,
    "stats": StatsMessage, "ping": PingMessage, "close": CloseMessage,
}
ClientMessage = (StartMessage | PromptMessage | PauseMessage | ResumeMessage | StatsMessage | PingMessage
                 | CloseMessage)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[ClientMessage, Field(discriminator="type")])


def parse_message(raw: str | bytes) -> ClientMessage:
    """One client message -> its model; ``LiveError`` (codes ``invalid_message``, ``invalid_json``,
    ``nesting_too_deep``, ``invalid_unicode``, ``unknown_message``, ``unknown_parameter``,
    ``missing_required_parameter``, ``invalid_value``) otherwise."""
    if isinstance(raw, bytes):
        raise LiveError("invalid_message", "binary messages are not accepted; send JSON text")
    try:
        data = jsonsafe.loads(raw)
    except jsonsafe.JSONInputError as exc:
        extra = {"param": exc.param} if exc.param else {}
        raise LiveError(exc.code, exc.message, **extra) from None
    if not isinstance(data, dict):
        raise LiveError("invalid_message", 'a message must be a JSON object such as {"type": "ping"}')
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_MODELS:
        raise LiveError("unknown_message", f"unknown message type {echo(kind)}; valid types: "
                        f"{list(MESSAGE_MODELS)}", param="type")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        # loc: (message type, field, union member...): messages are flat, the field is the parameter
        param = str(first["loc"][1]) if len(first["loc"]) > 1 else None
        if first["type"] == "extra_forbidden":
            raise LiveError("unknown_parameter", f"{kind!r} messages have no parameter {echo(param)}",
                            param=param) from None
        if first["type"] == "missing":
            raise LiveError("missing_required_parameter", f"{kind!r} messages need {echo(param)}",
                            param=param) from None
        raise LiveError("invalid_value", f"invalid {echo(param)}: {echo(first.get('input'))} "
                        f"({first['msg']})", param=param) from None

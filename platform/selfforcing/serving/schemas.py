"""HTTP request and response bodies. Field names follow OpenAI's video API where it has one.

Request fields are bounded types: a boolean is never a number, strings have a maximum length, integers
have a range, so the schema (``/openapi.json``) says what is accepted and nothing unbounded reaches the
validator. Prompt length is checked against the server's own limit by ``validation.RequestValidator``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints

MAX_SEED = 2**63 - 1
MAX_TEXT_CHARS = 20_000  # hard cap of any text field; prompts have the server's (smaller) limit on top


def _not_bool(value: Any) -> Any:
    """JSON ``true`` must not pass as 1 (pydantic's lax int / float accept booleans)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def bounded_int(ge: int, le: int) -> Any:
    """An integer in [ge, le], never a boolean (the range shows in the JSON schema)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_not_bool)]


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Count = Annotated[int, BeforeValidator(_not_bool)]  # range checked against the server's limits
Seed = bounded_int(0, MAX_SEED)
Seconds = Annotated[
    Annotated[str, StringConstraints(max_length=32)] | StrictInt | StrictFloat, BeforeValidator(_not_bool)
]


class VideoCreateRequest(BaseModel):
    """Body of ``POST /v1/videos`` (JSON or multipart form, as the ``openai`` SDK sends it).

    ``prompt``, ``model``, ``seconds``, ``size`` are OpenAI's; ``num_frames``, ``seed`` and
    ``negative_prompt`` are ours (the SDK sends them with ``extra_body``).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: Text = Field(description="text prompt describing the video")
    model: ShortText | None = Field(None, description="model id from GET /v1/models (default: the served one)")
    seconds: Seconds | None = Field(
        None, description="duration in seconds, e.g. '4' (OpenAI's values: '4', '8', '12'); the frame count "
        "is rounded to the nearest one the chunking allows, and the video object echoes this value"
    )
    size: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None, description="'WxH'; must be the model's native size")
    num_frames: Count | None = Field(
        None, description="pixel frames (1 + 4k, whole chunks, up to the server maximum); wins over seconds "
        "(both are validated)")
    seed: Seed | None = Field(None, description="noise seed in [0, 2**63); same seed -> same video")
    negative_prompt: Text | None = Field(
        None, description="unconditional prompt; used only by models sampled with guidance"
    )


class VideoStreamRequest(VideoCreateRequest):
    """Body of ``POST /v1/videos/stream``: a create request plus the stream format."""

    format: Literal["ndjson", "mjpeg", "mp4"] = Field(
        "ndjson",
        description="ndjson: one JSON object per chunk with base64 JPEG frames; mjpeg: "
        "multipart/x-mixed-replace JPEGs (a browser shows it live); mp4: fragmented MP4",
    )


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    """OpenAI's video object plus our extras (num_frames, seed, fps)."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str | None = None
    seconds: str
    size: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    num_frames: int
    seed: int
    fps: int


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelCard(BaseModel):
    """OpenAI's model object plus what a client needs to form valid requests."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "selfforcing"
    source: str = Field(description="models:/ URI, checkpoint directory or preset:<name>")
    registry: dict[str, Any] | None = Field(None, description="registered model name, version, alias, run")
    preset: str | None = None
    size: str
    fps: int
    frames_per_chunk: int = Field(description="latent frames per autoregressive step")
    pixel_frames_per_chunk: int
    default_num_frames: int
    max_num_frames: int
    valid_num_frames: list[int] = Field(description="frame counts accepted (up to the server maximum)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope."""

    error: ErrorDetail

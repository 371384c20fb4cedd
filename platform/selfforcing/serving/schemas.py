"""HTTP request and response bodies. Field names follow OpenAI's video API where it has one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class VideoCreateRequest(BaseModel):
    """Body of ``POST /v1/videos`` (JSON or multipart form, as the ``openai`` SDK sends it).

    ``prompt``, ``model``, ``seconds``, ``size`` are OpenAI's; ``num_frames``, ``seed`` and
    ``negative_prompt`` are ours (the SDK sends them with ``extra_body``).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="text prompt describing the video")
    model: str | None = Field(None, description="model id from GET /v1/models (default: the served one)")
    seconds: str | float | None = Field(
        None, description="duration; rounded to the nearest frame count the chunking allows"
    )
    size: str | None = Field(None, description="'WxH'; must be the model's native size")
    num_frames: int | None = Field(None, description="pixel frames (1 + 4k, whole chunks); wins over seconds")
    seed: int | None = Field(None, description="noise seed in [0, 2**63); same seed -> same video")
    negative_prompt: str | None = Field(
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

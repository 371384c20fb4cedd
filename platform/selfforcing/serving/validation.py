"""Request validation: an HTTP body -> a ``GenerationSpec`` the generator can run, or a 400 that says why.

Plain classes (no Ray, no FastAPI): the ingress calls ``RequestValidator.validate``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config.geometry import latent_frames_for, pixel_frames_for, valid_pixel_frame_counts_near
from .errors import from_validation_error, invalid
from .schemas import VideoCreateRequest, VideoStreamRequest

MAX_SEED = 2**63 - 1
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class ModelInfo(BaseModel):
    """What the ingress knows about the served model (sent by a generator replica; no tensors)."""

    id: str
    source: str
    created: int
    width: int
    height: int
    fps: int
    default_num_frames: int
    frames_per_chunk: int  # latent frames per AR step
    temporal_compression: int
    preset: str | None = None
    registry: dict[str, Any] | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def is_valid_num_frames(self, n: int) -> bool:
        latent = latent_frames_for(n, self.temporal_compression)
        return latent is not None and latent % self.frames_per_chunk == 0

    def valid_num_frames(self, up_to: int) -> list[int]:
        step = self.frames_per_chunk
        out, k = [], 1
        while (n := pixel_frames_for(k * step, self.temporal_compression)) <= up_to:
            out.append(n)
            k += 1
        return out

    @property
    def pixel_frames_per_chunk(self) -> int:
        return self.frames_per_chunk * self.temporal_compression


@dataclass(frozen=True)
class Limits:
    """Server-side limits that make a request invalid (400) rather than slow."""

    max_num_frames: int = 81
    max_prompt_chars: int = 2000


@dataclass(frozen=True)
class GenerationSpec:
    """A validated request: everything a generator replica needs besides the text embedding."""

    prompt: str
    num_frames: int
    seed: int
    negative_prompt: str | None
    model: str
    fps: int
    size: str
    format: str | None = None

    @property
    def seconds(self) -> str:
        """Duration as OpenAI's ``seconds`` string, e.g. ``"2.625"``."""
        return f"{self.num_frames / self.fps:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestValidator:
    """Turns request bodies into ``GenerationSpec``s for one served model."""

    def __init__(self, info: ModelInfo, limits: Limits) -> None:
        self.info = info
        self.limits = limits
        self.max_num_frames = max(
            [n for n in info.valid_num_frames(limits.max_num_frames)] or [0]
        )
        if self.max_num_frames == 0:
            raise ValueError(
                f"max_num_frames={limits.max_num_frames} is below the shortest video this model makes "
                f"({pixel_frames_for(info.frames_per_chunk, info.temporal_compression)} frames)"
            )

    def parse(self, body: Mapping[str, Any], stream: bool = False) -> VideoCreateRequest:
        model = VideoStreamRequest if stream else VideoCreateRequest
        if not isinstance(body, Mapping):
            raise invalid("The request body must be a JSON object.", None, "invalid_body")
        try:
            return model.model_validate(dict(body))
        except ValidationError as err:
            raise from_validation_error(err) from None

    def validate(self, body: Mapping[str, Any], stream: bool = False) -> GenerationSpec:
        """Body (parsed JSON or form fields) -> spec; ``APIError`` 400 naming the parameter otherwise."""
        req = self.parse(body, stream)
        prompt = req.prompt.strip()
        if not prompt:
            raise invalid("'prompt' must not be empty.", "prompt", "empty_prompt")
        if len(prompt) > self.limits.max_prompt_chars:
            raise invalid(
                f"'prompt' has {len(prompt)} characters; the maximum is {self.limits.max_prompt_chars}.",
                "prompt", "prompt_too_long",
            )
        negative = req.negative_prompt
        if negative is not None and len(negative) > self.limits.max_prompt_chars:
            raise invalid(f"'negative_prompt' is longer than {self.limits.max_prompt_chars} characters.",
                          "negative_prompt", "prompt_too_long")
        if req.model is not None and req.model != self.info.id:
            raise invalid(f"Model {req.model!r} is not served here; available: [{self.info.id!r}].",
                          "model", "model_not_found")
        return GenerationSpec(
            prompt=prompt, num_frames=self._num_frames(req), seed=self._seed(req.seed),
            negative_prompt=negative, model=self.info.id, fps=self.info.fps, size=self._size(req.size),
            format=getattr(req, "format", None),
        )

    def _size(self, size: str | None) -> str:
        if size is None:
            return self.info.size
        match = _SIZE.match(size)
        if not match:
            raise invalid(f"'size' must look like 'WIDTHxHEIGHT', got {size!r}.", "size")
        if (int(match[1]), int(match[2])) != (self.info.width, self.info.height):
            raise invalid(f"size {size!r} is not supported by {self.info.id}; supported: ['{self.info.size}'].",
                          "size", "unsupported_size")
        return self.info.size

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(2**31)
        if not 0 <= seed <= MAX_SEED:
            raise invalid(f"'seed' must be in [0, {MAX_SEED}], got {seed}.", "seed")
        return seed

    def _num_frames(self, req: VideoCreateRequest) -> int:
        valid = self.info.valid_num_frames(self.max_num_frames)
        if req.num_frames is not None:
            n = req.num_frames
            if n < 1 or not self.info.is_valid_num_frames(n):
                near = valid_pixel_frame_counts_near(
                    max(n, 1), self.info.temporal_compression, self.info.frames_per_chunk
                )
                raise invalid(
                    f"num_frames={n} does not fit the chunking (1 + {self.info.temporal_compression}k "
                    f"frames, whole chunks of {self.info.frames_per_chunk} latent frames); "
                    f"nearest valid counts: {near}.", "num_frames", "invalid_num_frames",
                )
        elif req.seconds is not None:
            try:
                seconds = float(req.seconds)
            except ValueError:
                raise invalid(f"'seconds' must be a number, got {req.seconds!r}.", "seconds") from None
            if not seconds > 0 or seconds != seconds or seconds == float("inf"):
                raise invalid(f"'seconds' must be positive, got {req.seconds!r}.", "seconds")
            target = seconds * self.info.fps
            candidates = valid + [pixel_frames_for(
                (len(valid) + 1) * self.info.frames_per_chunk, self.info.temporal_compression)]
            n = min(candidates, key=lambda c: (abs(c - target), -c))
        else:
            n = min(self.info.default_num_frames, self.max_num_frames)
        if n > self.max_num_frames:
            raise invalid(
                f"{n} frames ({n / self.info.fps:g} s) exceed the server maximum of {self.max_num_frames} "
                f"frames ({self.max_num_frames / self.info.fps:g} s).", "num_frames" if req.num_frames
                else "seconds", "video_too_long",
            )
        return n

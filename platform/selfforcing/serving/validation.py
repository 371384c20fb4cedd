"""Request validation: an HTTP body -> a ``GenerationSpec`` the generator can run, or a 400 that says why.

Plain classes (no Ray, no FastAPI): the ingress calls ``RequestValidator.validate``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config.geometry import latent_frames_for, pixel_frames_for
from .errors import echo, from_validation_error, invalid
from .schemas import MAX_SEED, VideoCreateRequest, VideoStreamRequest

_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


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
    """A validated request: everything a generator replica needs besides the text embedding. This typed
    object (not a dict) is what the ingress hands to the job store and the generator deployment."""

    prompt: str
    num_frames: int
    seed: int
    negative_prompt: str | None
    model: str
    fps: int
    size: str
    seconds: str  # OpenAI's duration string: the request's ``seconds`` if it gave one, else the length
    format: str | None = None


class RequestValidator:
    """Turns request bodies into ``GenerationSpec``s for one served model.

    Every number is bounded before any work proportional to it: ``num_frames`` is compared with the
    server maximum first, and the "nearest valid counts" of an error come from the (short) list of valid
    counts up to that maximum.
    """

    def __init__(self, info: ModelInfo, limits: Limits) -> None:
        self.info = info
        self.limits = limits
        self.valid_frames = info.valid_num_frames(limits.max_num_frames)
        self.max_num_frames = max(self.valid_frames or [0])
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
        prompt = self._text(req.prompt, "prompt").strip()
        if not prompt:
            raise invalid("'prompt' must not be empty.", "prompt", "empty_prompt")
        negative = None if req.negative_prompt is None else self._text(req.negative_prompt, "negative_prompt")
        if req.model is not None and req.model != self.info.id:
            raise invalid(f"Model {echo(req.model)} is not served here; available: [{self.info.id!r}].",
                          "model", "model_not_found")
        size = self._size(req.size)
        seconds = None if req.seconds is None else self._seconds(req.seconds)
        if req.num_frames is not None:
            num_frames = self._num_frames(req.num_frames)
        elif seconds is not None:
            num_frames = self._frames_for_seconds(seconds, req.seconds)
        else:
            num_frames = min(self.info.default_num_frames, self.max_num_frames)
        seconds_text = _seconds_text(req.seconds) if req.seconds is not None and req.num_frames is None \
            else f"{num_frames / self.info.fps:g}"
        return GenerationSpec(
            prompt=prompt, num_frames=num_frames, seed=self._seed(req.seed), negative_prompt=negative,
            model=self.info.id, fps=self.info.fps, size=size, seconds=seconds_text,
            format=getattr(req, "format", None),
        )

    def _text(self, text: str, param: str) -> str:
        if len(text) > self.limits.max_prompt_chars:
            raise invalid(f"{param!r} has {len(text)} characters; the maximum is {self.limits.max_prompt_chars}.",
                          param, "prompt_too_long")
        return text

    def _size(self, size: str | None) -> str:
        if size is None:
            return self.info.size
        match = _SIZE.match(size)
        if not match:
            raise invalid(f"'size' must look like 'WIDTHxHEIGHT', got {echo(size)}.", "size")
        if (int(match[1]), int(match[2])) != (self.info.width, self.info.height):
            raise invalid(f"size {echo(size)} is not supported by {self.info.id}; supported: ['{self.info.size}'].",
                          "size", "unsupported_size")
        return self.info.size

    @staticmethod
    def _seed(seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(2**31)
        if not 0 <= seed <= MAX_SEED:
            raise invalid(f"'seed' must be in [0, {MAX_SEED}], got {echo(seed)}.", "seed")
        return seed

    def _seconds(self, value: str | int | float) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise invalid(f"'seconds' must be a number such as '4', got {echo(value)}.", "seconds") from None
        if not 0 < seconds < float("inf"):
            raise invalid(f"'seconds' must be a positive number, got {echo(value)}.", "seconds")
        return seconds

    def _frames_for_seconds(self, seconds: float, raw: Any) -> int:
        """The valid frame count nearest to ``seconds`` (ties: the longer one)."""
        limit_s = self.max_num_frames / self.info.fps
        step = self.info.pixel_frames_per_chunk
        if seconds * self.info.fps >= self.max_num_frames + step / 2:  # nearer the next count
            raise invalid(f"seconds={echo(raw)} exceeds the server maximum of {limit_s:g} s "
                          f"({self.max_num_frames} frames).", "seconds", "video_too_long")
        target = seconds * self.info.fps
        return min(self.valid_frames, key=lambda c: (abs(c - target), -c))

    def _num_frames(self, n: int) -> int:
        if n > self.max_num_frames:
            raise invalid(f"num_frames={echo(n)} exceeds the server maximum of {self.max_num_frames} frames "
                          f"({self.max_num_frames / self.info.fps:g} s).", "num_frames", "video_too_long")
        if n < 1 or not self.info.is_valid_num_frames(n):
            near = sorted(sorted(self.valid_frames, key=lambda v: (abs(v - n), v))[:2])
            raise invalid(
                f"num_frames={n} does not fit the chunking (1 + {self.info.temporal_compression}k frames, "
                f"whole chunks of {self.info.frames_per_chunk} latent frames); nearest valid counts: {near}.",
                "num_frames", "invalid_num_frames",
            )
        return n


def _seconds_text(value: str | int | float) -> str:
    """The request's ``seconds`` as OpenAI's string form: ``"4"`` stays ``"4"``, ``4.0`` -> ``"4"``."""
    return value.strip() if isinstance(value, str) else f"{value:g}"

"""Stream encoders: chunks of frames -> bytes on the wire, one class per ``format``.

Each encoder turns the generator's chunks into bytes as they arrive (``header`` once, ``chunk`` per
chunk, ``footer`` at the end, ``error`` if generation stops early), so the first frames leave the
server while the rest of the video is still being generated.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

import numpy as np

from ..inference.video_io import Mp4Writer, encode_jpeg


class StreamEncoder:
    """Base: ``media_type`` and the byte pieces of a stream. ``chunk`` gets frames uint8 [n, H, W, 3]."""

    media_type: ClassVar[str]

    def __init__(self, fps: int, jpeg_quality: int = 85) -> None:
        self.fps = fps
        self.jpeg_quality = jpeg_quality

    def header(self, meta: dict[str, Any]) -> bytes:
        return b""

    def chunk(self, frames: np.ndarray, meta: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def footer(self, meta: dict[str, Any]) -> bytes:
        return b""

    def error(self, error: dict[str, Any]) -> bytes:
        """Generation failed mid-stream (the status line is already sent): end the stream cleanly."""
        return self.footer({})


class NdjsonEncoder(StreamEncoder):
    """One JSON object per line: a ``video.stream`` header, a ``video.chunk`` per chunk (base64 JPEG
    frames, index, timings), then ``video.done`` (or ``error`` with OpenAI's error object)."""

    media_type = "application/x-ndjson"

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

    def header(self, meta: dict[str, Any]) -> bytes:
        return self._line({"object": "video.stream", **meta})

    def chunk(self, frames: np.ndarray, meta: dict[str, Any]) -> bytes:
        jpegs = [base64.b64encode(encode_jpeg(f, self.jpeg_quality)).decode() for f in frames]
        return self._line({"object": "video.chunk", **meta, "num_frames": len(jpegs), "frames": jpegs})

    def footer(self, meta: dict[str, Any]) -> bytes:
        return self._line({"object": "video.done", **meta})

    def error(self, error: dict[str, Any]) -> bytes:
        return self._line({"object": "error", "error": error})


class MjpegEncoder(StreamEncoder):
    """``multipart/x-mixed-replace`` JPEG parts: browsers display it live in an ``<img>``."""

    boundary = "frame"
    media_type = f"multipart/x-mixed-replace; boundary={boundary}"

    def chunk(self, frames: np.ndarray, meta: dict[str, Any]) -> bytes:
        parts = []
        for frame in frames:
            jpeg = encode_jpeg(frame, self.jpeg_quality)
            parts.append(
                f"--{self.boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg + b"\r\n"
            )
        return b"".join(parts)

    def footer(self, meta: dict[str, Any]) -> bytes:
        return f"--{self.boundary}--\r\n".encode()


class _Sink:
    """A write-only file object collecting what the muxer writes (PyAV needs no seek for fMP4)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Mp4Encoder(StreamEncoder):
    """Fragmented MP4 (H.264): moov first, then fragments a player can start on before the end."""

    media_type = "video/mp4"

    def __init__(self, fps: int, jpeg_quality: int = 85) -> None:
        super().__init__(fps, jpeg_quality)
        self._sink = _Sink()
        self._writer: Mp4Writer | None = None

    def chunk(self, frames: np.ndarray, meta: dict[str, Any]) -> bytes:
        if self._writer is None:
            self._writer = Mp4Writer(self._sink, self.fps, fragmented=True)
        self._writer.add(frames)
        return self._sink.drain()

    def footer(self, meta: dict[str, Any]) -> bytes:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self._sink.drain()


ENCODERS: dict[str, type[StreamEncoder]] = {"ndjson": NdjsonEncoder, "mjpeg": MjpegEncoder, "mp4": Mp4Encoder}


def make_encoder(fmt: str, fps: int) -> StreamEncoder:
    """The encoder for ``fmt``; an unknown format names the valid ones."""
    if fmt not in ENCODERS:
        raise ValueError(f"unknown stream format {fmt!r}; valid formats: {sorted(ENCODERS)}")
    return ENCODERS[fmt](fps)

"""Video files and streams with PyAV: MP4 files, fragmented MP4 byte streams, JPEG frames."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sizes: pad the last row/column by edge replication."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


class Mp4Writer:
    """Incremental H.264 MP4 writer: add frames chunk by chunk as they are generated.

    ``fragmented=True`` writes a fragmented MP4 (moov first, then one fragment per keyframe interval),
    which a browser or player can start playing before the file is complete; that is what the streaming
    endpoint sends. ``target`` is a path or a binary file object.
    """

    def __init__(
        self, target: str | Path | BinaryIO, fps: int, fragmented: bool = False, crf: int = 18
    ) -> None:
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fragmented else {}
        self._container = av.open(target, mode="w", format="mp4", options=options)
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps))
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        if fragmented:
            self._stream.codec_context.gop_size = max(1, fps // 2)
        self._opened = False
        self.frames_written = 0

    def add(self, frames: np.ndarray) -> None:
        """Append uint8 frames [T, H, W, 3]."""
        frames = _even(np.asarray(frames, dtype=np.uint8))
        if not self._opened:
            self._stream.height, self._stream.width = frames.shape[1:3]
            self._opened = True
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_mp4(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Write uint8 frames [T, H, W, 3] to an MP4 file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, fps) as writer:
        writer.add(frames)
    return path


def read_video(source: str | Path | bytes) -> np.ndarray:
    """Decode every frame of a video file (or its bytes) to uint8 [T, H, W, 3]."""
    src = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with av.open(src) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """One uint8 frame [H, W, 3] -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

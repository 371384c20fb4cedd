"""Stream encoders produce bytes that standard decoders read back, chunk by chunk."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from selfforcing.inference.video_io import read_video
from selfforcing.serving.encoders import make_encoder

RNG = np.random.default_rng(0)
CHUNKS = [RNG.integers(0, 255, (n, 32, 48, 3), dtype=np.uint8) for n in (9, 12)]


def encode(fmt: str) -> list[bytes]:
    enc = make_encoder(fmt, fps=8)
    pieces = [enc.header({"seed": 1})]
    pieces += [enc.chunk(frames, {"index": i}) for i, frames in enumerate(CHUNKS)]
    return pieces + [enc.footer({"frames": 21})]


def test_ndjson_lines_hold_jpeg_frames():
    lines = [json.loads(x) for x in b"".join(encode("ndjson")).splitlines()]
    assert [line["object"] for line in lines] == ["video.stream", "video.chunk", "video.chunk", "video.done"]
    assert [line["num_frames"] for line in lines[1:3]] == [9, 12]
    img = Image.open(io.BytesIO(base64.b64decode(lines[1]["frames"][0])))
    assert img.size == (48, 32)


def test_mjpeg_parts():
    data = b"".join(encode("mjpeg"))
    parts = [p for p in data.split(b"--frame") if b"image/jpeg" in p]
    assert len(parts) == 21 and data.endswith(b"--frame--\r\n")
    jpeg = parts[0].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    assert Image.open(io.BytesIO(jpeg)).size == (48, 32)


def test_fragmented_mp4_streams_and_decodes():
    pieces = encode("mp4")
    assert len(pieces[1]) > 0  # the first chunk leaves before the video is complete
    assert read_video(b"".join(pieces)).shape == (21, 32, 48, 3)


def test_unknown_format():
    with pytest.raises(ValueError, match="valid formats"):
        make_encoder("gif", 8)

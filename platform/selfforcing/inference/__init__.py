"""Streaming generation (chunk by chunk) and video encoding.

The video codecs (PyAV) load on first use, so generation runs where PyAV is not installed (a bare GPU
benchmark machine).
"""

from .pipeline import GeneratedVideo, VideoChunk, VideoPipeline, frames_to_uint8

_VIDEO_IO = ("Mp4Writer", "encode_jpeg", "read_video", "write_mp4")


def __getattr__(name: str):
    if name in _VIDEO_IO:
        from . import video_io

        return getattr(video_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GeneratedVideo",
    "Mp4Writer",
    "VideoChunk",
    "VideoPipeline",
    "encode_jpeg",
    "frames_to_uint8",
    "read_video",
    "write_mp4",
]

"""Streaming generation (chunk by chunk) and video encoding."""

from .pipeline import GeneratedVideo, VideoChunk, VideoPipeline, frames_to_uint8
from .video_io import Mp4Writer, encode_jpeg, read_video, write_mp4

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

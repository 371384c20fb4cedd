"""Chunk-level batching: many independent streams advance together, one model call per denoising step.

Streams join and leave between chunks, each with its own prompt, seed and position in the video. Each
stream owns a row of one shared KV cache and its own noise generator and VAE decoder, so its frames are
exactly what it would get alone; only the model calls are shared, which is where the cost is. The chunk
itself is produced by the same ``rollout`` loop as every other generation path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..forcing.rollout import NoiseSource, RolloutConfig, rollout
from .pipeline import VideoChunk, VideoPipeline, frames_to_uint8


@dataclass
class _Stream:
    stream_id: str
    text: torch.Tensor  # [1, L, text_dim]
    generator: torch.Generator
    chunks_left: int | None  # None = unbounded (needs a rolling cache)
    decoder: object | None
    chunk_index: int = 0
    frame_start: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class ParkedStream:
    """A stream taken out of the batch (paused) with its cache row, to be put back by ``unpark``."""

    stream: _Stream
    k: torch.Tensor | None  # [layers, tokens, heads, head_dim] of its cache row (None before chunk 0)
    v: torch.Tensor | None
    frames_written: int

    @property
    def stream_id(self) -> str:
        return self.stream.stream_id


def decode_rows(decoders: list, latents: torch.Tensor) -> list[np.ndarray]:
    """Decode row i of ``latents`` [B, k, C, h, w] with ``decoders[i]``; rows whose decoders share a
    ``batch_key`` (same VAE and phase) go through one ``decode_many`` call.

    Why: on small models the VAE decode, not the DiT, dominates a chunk, so batching only the DiT calls
    leaves most of the per-stream cost in place.
    """
    out: list[np.ndarray | None] = [None] * len(decoders)
    groups: dict[object, list[int]] = {}
    for row, dec in enumerate(decoders):
        key = dec.batch_key()
        groups.setdefault(key if key is not None else ("solo", row), []).append(row)
    for rows in groups.values():
        members = [decoders[r] for r in rows]
        frames = frames_to_uint8(type(members[0]).decode_many(members, latents[rows]))
        for j, row in enumerate(rows):
            out[row] = frames[j : j + 1]
    return out  # type: ignore[return-value]


class ChunkBatcher:
    """Generates the next chunk of every active stream in one batched rollout step.

    ``window_frames`` sizes the shared rolling cache (default: the generation config's window, else the
    config's default video length, so a default-length stream sees its whole past as it would alone).
    """

    def __init__(
        self,
        pipeline: VideoPipeline,
        max_streams: int = 8,
        window_frames: int | None = None,
        sink_frames: int | None = None,
        decode: bool = True,
    ) -> None:
        self.pipe = pipeline
        cfg = pipeline.config
        geo = pipeline.geometry()
        self.window_frames = window_frames or cfg.generation.window_frames or geo.latent_frames
        self.sink_frames = cfg.generation.sink_frames if sink_frames is None else sink_frames
        self.frames_per_chunk = geo.frames_per_chunk
        self.latent_shape = (cfg.model.in_dim, geo.latent_height, geo.latent_width)
        self.decode = decode
        self.cache = pipeline.model.new_kv_cache(max_streams, self.window_frames, self.sink_frames)
        self.cache.keep_rows([])
        self.streams: list[_Stream] = []
        self._text: torch.Tensor | None = None
        self._rollout = RolloutConfig(pipeline.timesteps, self.frames_per_chunk, cfg.schedule.context_noise)

    # ------------------------------------------------------------------ membership
    @property
    def capacity(self) -> int:
        return self.cache.batch_size

    def __len__(self) -> int:
        return len(self.streams)

    def has(self, stream_id: str) -> bool:
        return any(s.stream_id == stream_id for s in self.streams)

    def add(self, stream_id: str, text: torch.Tensor, seed: int, num_chunks: int | None = None) -> None:
        """Start a stream with prompt embeddings ``text`` [1, L, text_dim]; it joins at the next step."""
        if self.has(stream_id):
            raise ValueError(f"stream {stream_id!r} already exists")
        if num_chunks is not None and num_chunks < 1:
            raise ValueError(f"num_chunks={num_chunks} must be >= 1 (or None for an unbounded stream)")
        self.cache.add_row()
        decoder = self.pipe.vae.streaming_decoder() if self.decode else None
        self.streams.append(
            _Stream(stream_id, self._embed(text), self._generator(seed), num_chunks, decoder)
        )
        self._text = None

    def _generator(self, seed: int) -> torch.Generator:
        """The stream's noise generator, on the model's device like ``VideoPipeline.stream``'s, so a
        batched stream draws exactly its solo noise, without a host-to-device copy per step."""
        return torch.Generator(device=self.pipe.device).manual_seed(int(seed))

    def set_text(self, stream_id: str, text: torch.Tensor) -> None:
        """Switch a stream's prompt: later chunks attend to the new text, the frame cache is kept."""
        self._find(stream_id).text = self._embed(text)
        self._text = None

    def remove(self, stream_id: str) -> None:
        """Stop a stream (finished, cancelled or disconnected) and free its row."""
        self._find(stream_id)
        keep = [i for i, s in enumerate(self.streams) if s.stream_id != stream_id]
        self.cache.keep_rows(keep)
        self.streams = [self.streams[i] for i in keep]
        self._text = None

    def park(self, stream_id: str) -> ParkedStream:
        """Take a stream out of the batch (a paused viewer costs no compute) keeping its cache row,
        noise generator and decoder, so ``unpark`` continues it exactly where it stopped."""
        s = self._find(stream_id)
        row = self.streams.index(s)
        k = v = None
        if self.cache.k is not None:
            k, v = self.cache.k[:, row].clone(), self.cache.v[:, row].clone()
        parked = ParkedStream(s, k, v, self.cache.row_frames[row])
        self.remove(stream_id)
        return parked

    def unpark(self, parked: ParkedStream) -> None:
        """Put a parked stream back; it joins the next step at the position where it was parked."""
        if self.has(parked.stream_id):
            raise ValueError(f"stream {parked.stream_id!r} already exists")
        row = self.cache.add_row()
        if parked.k is not None:
            self.cache.k[:, row] = parked.k
            self.cache.v[:, row] = parked.v
        self.cache.row_frames[row] = parked.frames_written
        self.streams.append(parked.stream)
        self._text = None

    def _find(self, stream_id: str) -> _Stream:
        for s in self.streams:
            if s.stream_id == stream_id:
                return s
        raise KeyError(f"no stream {stream_id!r}")

    def _embed(self, text: torch.Tensor) -> torch.Tensor:
        if text.ndim != 3 or text.shape[0] != 1:
            raise ValueError(f"text embeddings must be [1, L, text_dim], got {tuple(text.shape)}")
        return text.to(device=self.pipe.device, dtype=next(self.pipe.model.parameters()).dtype)

    # ------------------------------------------------------------------ generation
    def step(self) -> list[tuple[str, VideoChunk]]:
        """Generate one chunk for every active stream; finished streams leave afterwards."""
        if not self.streams:
            return []
        if self._text is None:  # a new tensor makes the model recompute the prompts' K/V once
            self._text = torch.cat([s.text for s in self.streams])
        start = time.perf_counter()
        noise = NoiseSource.from_generators([s.generator for s in self.streams])
        chunk = next(
            rollout(self.pipe.model, self._text, 1, self.latent_shape, self._rollout,
                    self.pipe.schedule, noise, self.cache)
        )
        starts = chunk.start_frame if isinstance(chunk.start_frame, list) else [chunk.start_frame] * len(self)
        decoded: list[np.ndarray | None] = [None] * len(self.streams)
        if self.decode:
            with torch.no_grad():
                decoded = decode_rows([s.decoder for s in self.streams], chunk.latents)
        now = time.perf_counter()
        out: list[tuple[str, VideoChunk]] = []
        for row, s in enumerate(self.streams):
            latents = chunk.latents[row : row + 1]
            frames = decoded[row]
            out.append((s.stream_id, VideoChunk(
                index=s.chunk_index, latent_start=starts[row], latents=latents, frames=frames,
                frame_start=s.frame_start, seconds=now - start, elapsed=now - s.started,
            )))
            s.chunk_index += 1
            s.frame_start += 0 if frames is None else frames.shape[1]
            if s.chunks_left is not None:
                s.chunks_left -= 1
        for s in [s for s in self.streams if s.chunks_left == 0]:
            self.remove(s.stream_id)
        return out

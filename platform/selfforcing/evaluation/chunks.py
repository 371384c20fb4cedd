"""Aggregation per chunk index, so error accumulation over autoregressive steps is visible."""

from __future__ import annotations

import numpy as np


def chunk_index(num_frames: int, frames_per_chunk: int) -> np.ndarray:
    """int64 [T]: the chunk of each frame."""
    if frames_per_chunk <= 0:
        raise ValueError(f"frames_per_chunk={frames_per_chunk} must be > 0")
    return np.arange(num_frames) // frames_per_chunk


def by_chunk(values: np.ndarray, frames_per_chunk: int, first_frame: int = 0) -> list[float | None]:
    """Mean of values [N, T'] per chunk index k = 0..K-1, over videos and the chunk's frames.

    ``first_frame`` is the frame of column 0: 0 for per-frame values, 1 for per-step values (step t goes
    from frame t-1 to frame t and belongs to frame t's chunk). A chunk without values is None: chunk 0 of
    per-step values of a frame-wise model (frames_per_chunk = 1), which has no step inside it.
    """
    chunks = (np.arange(values.shape[1]) + first_frame) // frames_per_chunk
    k = -(-(values.shape[1] + first_frame) // frames_per_chunk)
    return [float(values[:, chunks == i].mean()) if (chunks == i).any() else None for i in range(k)]


def to_chunks(values: np.ndarray, frames_per_chunk: int, first_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Regroup per-frame values [N, T', ...] into [N, K, F, ...] with a validity mask [N, K, F].

    K covers every chunk from 0 to the last frame's; slots without a value (before ``first_frame``, or
    after the end of a partial last chunk) are zero and masked out.
    """
    n, t = values.shape[:2]
    total = first_frame + t
    k = -(-total // frames_per_chunk)
    padded = np.zeros((n, k * frames_per_chunk, *values.shape[2:]), dtype=np.float64)
    mask = np.zeros((n, k * frames_per_chunk), dtype=bool)
    padded[:, first_frame:total] = values
    mask[:, first_frame:total] = True
    return (
        padded.reshape(n, k, frames_per_chunk, *values.shape[2:]),
        mask.reshape(n, k, frames_per_chunk),
    )


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the last mask axis (values may have trailing feature axes); 0 where nothing is valid."""
    m = mask.reshape(*mask.shape, *([1] * (values.ndim - mask.ndim))).astype(np.float64)
    count = m.sum(axis=mask.ndim - 1)
    return (values * m).sum(axis=mask.ndim - 1) / np.maximum(count, 1.0)

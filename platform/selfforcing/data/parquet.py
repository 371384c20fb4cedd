"""Prompt sets, video latents and videos as Parquet: in-memory records, writers and readers.

The columns of each kind are in ``schemas`` (with the version written into every file); the tensor codec
is ``tensor_bytes``; embeddings and ODE trajectories have their own modules. Every reader takes a single
file or a sharded directory and checks the kind and version first:

- prompts: ``id``, ``prompt``, ``negative_prompt`` (nullable), ``split`` (nullable: train / val / ...).
- latents: ``id``, ``prompt``, ``latent`` bytes, ``latent_shape``, ``latent_dtype``. Shapes may differ
  between rows (videos of any length); ``LatentSet.stack`` batches equal shapes.
- videos: ``id``, ``prompt``, ``frames`` raw uint8 bytes of [T, H, W, 3], ``frames_shape``, ``fps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import schemas as _schemas
from .schemas import KIND_KEY, VERSION_KEY, DatasetSchemaError, recorded_kind_version
from .tables import build_table, read_table, split_columns, unique_ids, write_table
from .tensor_bytes import tensor_from_bytes, tensor_to_bytes

__all__ = [
    "KIND_KEY", "VERSION_KEY", "SCHEMAS", "DatasetSchemaError", "LatentSet", "PromptSet", "VideoSet",
    "read_kind", "read_latents", "read_prompts", "read_videos", "tensor_from_bytes", "tensor_to_bytes",
    "write_latents", "write_prompts", "write_videos",
]

SCHEMAS: dict[str, pa.Schema] = {kind: s.arrow_schema() for kind, s in _schemas.SCHEMAS.items()}
PROMPTS_SCHEMA, LATENTS_SCHEMA, VIDEOS_SCHEMA = SCHEMAS["prompts"], SCHEMAS["latents"], SCHEMAS["videos"]


# -- records ---------------------------------------------------------------------------------------
@dataclass
class PromptSet:
    """N prompts; ``extra`` maps column name -> N values; ``splits`` is None per row when unset."""

    ids: list[str]
    prompts: list[str]
    negative_prompts: list[str | None]
    extra: dict[str, list[Any]] = field(default_factory=dict)
    splits: list[str | None] | None = None

    def __post_init__(self) -> None:
        if self.splits is None:
            self.splits = [None] * len(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, split: str) -> PromptSet:
        """The prompts of one split."""
        keep = [i for i, s in enumerate(self.splits or []) if s == split]
        if not keep:
            raise ValueError(f"no prompts of split {split!r}; splits present: {sorted(set(map(str, self.splits)))}")

        def pick(values: list) -> list:
            return [values[i] for i in keep]

        return PromptSet(pick(self.ids), pick(self.prompts), pick(self.negative_prompts),
                         {k: pick(v) for k, v in self.extra.items()}, pick(self.splits or []))


@dataclass
class LatentSet:
    """N latents (each any shape, e.g. [F, C, h, w]) with their prompts."""

    ids: list[str]
    prompts: list[str]
    latents: list[torch.Tensor]
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def stack(self) -> torch.Tensor:
        """[N, *shape] batch; fails naming the shapes when rows differ."""
        shapes = sorted({tuple(x.shape) for x in self.latents})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack latents of different shapes {shapes}")
        return torch.stack(self.latents)


@dataclass
class VideoSet:
    """N uint8 videos [T, H, W, 3] with their prompts; ``fps`` per video or None."""

    ids: list[str]
    prompts: list[str]
    videos: list[np.ndarray]
    fps: list[float | None]
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def stack(self) -> np.ndarray:
        """uint8 [N, T, H, W, 3]; fails naming the shapes when videos differ."""
        shapes = sorted({v.shape for v in self.videos})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack videos of different shapes {shapes}")
        return np.stack(self.videos)


# -- tables ----------------------------------------------------------------------------------------
def prompts_table(
    prompts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    negative_prompts: Sequence[str | None] | None = None,
    splits: Sequence[str | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> pa.Table:
    cols: dict[str, Sequence] = {"id": unique_ids(len(prompts), ids), "prompt": list(prompts)}
    if negative_prompts is not None:
        cols["negative_prompt"] = list(negative_prompts)
    if splits is not None:
        cols["split"] = list(splits)
    return build_table("prompts", cols, extra)


def latents_table(
    prompts: Sequence[str],
    latents: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    *,
    ids: Sequence[str] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> pa.Table:
    encoded = [tensor_to_bytes(x) for x in latents]
    cols = {
        "id": unique_ids(len(prompts), ids), "prompt": list(prompts),
        "latent": [e[0] for e in encoded], "latent_shape": [e[1] for e in encoded],
        "latent_dtype": [e[2] for e in encoded],
    }
    return build_table("latents", cols, extra)


# -- writing ---------------------------------------------------------------------------------------
def write_prompts(
    path: str | Path,
    prompts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    negative_prompts: Sequence[str | None] | None = None,
    splits: Sequence[str | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write a prompt set; ids default to the row number."""
    return write_table(path, prompts_table(prompts, ids=ids, negative_prompts=negative_prompts,
                                           splits=splits, extra=extra))


def write_latents(
    path: str | Path,
    prompts: Sequence[str],
    latents: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    *,
    ids: Sequence[str] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write latents (a list of tensors, or a batch [N, ...]) with their prompts, bit-exactly."""
    return write_table(path, latents_table(prompts, latents, ids=ids, extra=extra))


def write_videos(
    path: str | Path,
    prompts: Sequence[str],
    videos: Sequence[np.ndarray] | np.ndarray,
    *,
    ids: Sequence[str] | None = None,
    fps: float | Sequence[float | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write uint8 videos [T, H, W, 3] (a list, or a batch [N, T, H, W, 3]) with their prompts."""
    frames, shapes = [], []
    for i, v in enumerate(videos):
        v = np.asarray(v)
        if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"video {i} must be uint8 [T, H, W, 3]; got {v.dtype} {v.shape}")
        frames.append(np.ascontiguousarray(v).tobytes())
        shapes.append(list(v.shape))
    fps_list = list(fps) if isinstance(fps, Sequence) else [fps] * len(frames)
    cols = {
        "id": unique_ids(len(prompts), ids), "prompt": list(prompts), "frames": frames,
        "frames_shape": shapes, "fps": [None if f is None else float(f) for f in fps_list],
    }
    return write_table(path, build_table("videos", cols, extra))


# -- reading ---------------------------------------------------------------------------------------
def read_kind(path: str | Path) -> str | None:
    """The dataset kind recorded in a file's metadata, or None for a file written elsewhere."""
    return recorded_kind_version(pq.read_schema(path).metadata)[0]


def read_prompts(path: str | Path) -> PromptSet:
    """A prompt set from a file or sharded directory (files without a ``split`` / ``negative_prompt``
    column read as None there)."""
    cols, extra = split_columns(read_table(path, "prompts"), "prompts")
    return PromptSet(cols["id"], cols["prompt"], cols["negative_prompt"], extra, cols["split"])


def read_latents(path: str | Path) -> LatentSet:
    cols, extra = split_columns(read_table(path, "latents"), "latents")
    latents = [
        tensor_from_bytes(b, s, d)
        for b, s, d in zip(cols["latent"], cols["latent_shape"], cols["latent_dtype"], strict=True)
    ]
    return LatentSet(cols["id"], cols["prompt"], latents, extra)


def read_videos(path: str | Path) -> VideoSet:
    cols, extra = split_columns(read_table(path, "videos"), "videos")
    videos = [
        np.frombuffer(b, dtype=np.uint8).reshape(s).copy()
        for b, s in zip(cols["frames"], cols["frames_shape"], strict=True)
    ]
    return VideoSet(cols["id"], cols["prompt"], videos, cols["fps"], extra)

"""Toy-world datasets as Parquet files of the platform's generic kinds (see ``selfforcing.data.parquet``).

Every row carries the caption as ``prompt`` and the scene parameters as extra columns (colour, shape,
direction, speed, start_row, start_col), so evaluation can compare generated videos with their scenes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from .config import ToyWorldConfig
from .latents import PixelUnshuffleLatents
from .render import render
from .scenes import Scenes, sample_scenes

DatasetKind = Literal["videos", "latents", "prompts"]


def write_toyworld_dataset(
    path: str | Path,
    n: int,
    config: ToyWorldConfig | None = None,
    seed: int | None = None,
    kind: DatasetKind = "videos",
    num_frames: int | None = None,
) -> Path:
    """Sample ``n`` scenes and write them as one Parquet file.

    kind: ``videos`` (uint8 frames [T, H, W, 3]), ``latents`` (float32 [T, C, h, w] from
    ``PixelUnshuffleLatents``) or ``prompts`` (captions only). seed defaults to ``config.seed``;
    num_frames to ``config.num_frames``. Same arguments -> byte-identical data.
    """
    from .. import parquet  # pyarrow only where files are written: the world itself needs only numpy

    config = config or ToyWorldConfig()
    seed = config.seed if seed is None else seed
    num_frames = num_frames or config.num_frames
    scenes = sample_scenes(n, np.random.default_rng(seed), config)
    prompts = scenes.captions()
    ids = [f"toy-{seed}-{i:07d}" for i in range(n)]
    extra = scenes.to_columns()
    if kind == "prompts":
        return parquet.write_prompts(path, prompts, ids=ids, extra=extra)
    videos = render(scenes, num_frames)
    if kind == "videos":
        return parquet.write_videos(path, prompts, videos, ids=ids, extra=extra)
    if kind == "latents":
        latents = PixelUnshuffleLatents(config.latent_factor, config.latent_scale).encode(videos)
        return parquet.write_latents(path, prompts, latents, ids=ids, extra=extra)
    raise ValueError(f"unknown dataset kind {kind!r}; valid kinds are ['videos', 'latents', 'prompts']")


def read_toyworld_videos(path: str | Path, config: ToyWorldConfig | None = None) -> tuple[np.ndarray, Scenes]:
    """uint8 videos [N, T, H, W, 3] and their scenes from a file written by ``write_toyworld_dataset``."""
    from .. import parquet

    config = config or ToyWorldConfig()
    data = parquet.read_videos(path)
    return data.stack(), Scenes.from_columns(data.extra, config)

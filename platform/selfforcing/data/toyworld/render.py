"""Rendering: scene parameters -> uint8 videos, vectorised over videos and frames.

Positions are the top-left cell of the object on the (rows, cols) torus of cells; an object that crosses
an edge wraps to the opposite side, so motion never bounces.
"""

from __future__ import annotations

import numpy as np

from .config import ToyWorldConfig
from .scenes import Scenes
from .shapes import shape_mask


def trajectories(scenes: Scenes, num_frames: int) -> np.ndarray:
    """int64 [N, T, 2]: the (row, col) cell of each scene's object at frames 0..T-1 (wrapped)."""
    if num_frames <= 0:
        raise ValueError(f"num_frames={num_frames} must be > 0")
    if (scenes.start < 0).any():
        raise ValueError("scenes without start cells (parsed from captions) cannot be rendered")
    t = np.arange(num_frames, dtype=np.int64)[None, :, None]
    grid = np.array(scenes.config.grid, dtype=np.int64)
    return (scenes.start[:, None, :] + scenes.velocity()[:, None, :] * t) % grid


def render_frames(
    colour: np.ndarray, shape: np.ndarray, position: np.ndarray, config: ToyWorldConfig
) -> np.ndarray:
    """Draw one object per frame from per-frame parameters.

    colour, shape: int [N, T] indices into the config's lists; position: int [N, T, 2] cells.
    Returns uint8 [N, T, H, W, 3]. Used by ``render`` and by the evaluation to redraw fitted frames.
    """
    n, t = colour.shape
    cs, k = config.cell_size, config.object_size
    canvas = np.empty((n, t, config.height, config.width, 3), dtype=np.uint8)
    canvas[...] = np.asarray(config.background, dtype=np.uint8)
    palette = np.asarray(list(config.colours.values()), dtype=np.uint8)  # [C, 3]
    for s, name in enumerate(config.shapes):
        ni, ti = np.nonzero(shape == s)
        if len(ni) == 0:
            continue
        du, dv = np.nonzero(shape_mask(name, k))  # [P] pixel offsets inside the object's block
        rows = (position[ni, ti, 0, None] * cs + du[None, :]) % config.height  # [M, P]
        cols = (position[ni, ti, 1, None] * cs + dv[None, :]) % config.width
        canvas[ni[:, None], ti[:, None], rows, cols] = palette[colour[ni, ti]][:, None, :]
    return canvas


def render(scenes: Scenes, num_frames: int) -> np.ndarray:
    """uint8 [N, T, H, W, 3] videos of the scenes, T = num_frames."""
    pos = trajectories(scenes, num_frames)
    colour = np.repeat(scenes.colour[:, None], num_frames, axis=1)
    shape = np.repeat(scenes.shape[:, None], num_frames, axis=1)
    return render_frames(colour, shape, pos, scenes.config)


def render_every_start(scenes: Scenes, num_frames: int) -> np.ndarray:
    """uint8 [N, K, T, H, W, 3]: each scene's caption rendered from all K = rows * cols start cells.

    Given its caption, a video of this world is one of these K, equally likely: the support of the
    caption-conditional distribution, which makes its exact denoiser computable
    (``selfforcing.evaluation.posterior``).
    """
    rows, cols = scenes.config.grid
    starts = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    k, n = len(starts), len(scenes.colour)
    tiled = Scenes(
        config=scenes.config,
        colour=np.repeat(scenes.colour, k), shape=np.repeat(scenes.shape, k),
        direction=np.repeat(scenes.direction, k), speed=np.repeat(scenes.speed, k),
        start=np.tile(starts, (n, 1)).astype(np.int64),
    )
    videos = render(tiled, num_frames)
    return videos.reshape(n, k, *videos.shape[1:])

"""The toy world: a synthetic captioned video world small enough to learn on a CPU in minutes.

One coloured object moves by whole cells (= whole DiT tokens) on a wrapping grid; captions name its colour,
shape, direction and speed. ``PixelUnshuffleLatents`` is its lossless codec. See ``config.py`` for the
numbers and ``selfforcing.evaluation`` for the metrics that measure how well a model learned it.
"""

from .config import DEFAULT_COLOURS, DIRECTION_STEPS, ToyWorldConfig
from .dataset import read_toyworld_videos, write_toyworld_dataset
from .latents import PixelUnshuffleLatents, to_uint8
from .render import render, render_every_start, render_frames, trajectories
from .scenes import (
    Scene,
    Scenes,
    caption,
    caption_combinations,
    parse_caption,
    sample_scenes,
    scenes_from_seeds,
    seed_uniforms,
)
from .shapes import SHAPES, shape_mask


def vocabulary(config: ToyWorldConfig | None = None) -> list[str]:
    """Every caption word of the world, in a fixed order."""
    return (config or ToyWorldConfig()).vocabulary()


__all__ = [
    "DEFAULT_COLOURS",
    "DIRECTION_STEPS",
    "SHAPES",
    "PixelUnshuffleLatents",
    "Scene",
    "Scenes",
    "ToyWorldConfig",
    "caption",
    "caption_combinations",
    "parse_caption",
    "read_toyworld_videos",
    "render",
    "render_every_start",
    "render_frames",
    "sample_scenes",
    "scenes_from_seeds",
    "seed_uniforms",
    "shape_mask",
    "to_uint8",
    "trajectories",
    "vocabulary",
    "write_toyworld_dataset",
]

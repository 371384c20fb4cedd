"""Agreement between what a caption asks for and what the fitted frames show.

Per frame: does the fitted colour (shape) equal the caption's? Per step (frame t-1 -> t): is the fitted
wrapped displacement an axis-aligned move in the caption's direction (direction), of the caption's length
in cells (speed), and exactly the caption's velocity (motion)?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selfforcing.data.toyworld.config import DIRECTION_STEPS, ToyWorldConfig
from selfforcing.data.toyworld.scenes import Scene, Scenes, parse_caption

from .fitting import FrameFit
from .trajectory import displacements

Targets = Scenes | Sequence[str] | Sequence[Scene]


def as_scenes(targets: Targets, config: ToyWorldConfig) -> Scenes:
    """Scenes from Scenes, named Scene objects or caption strings (start cells are not needed)."""
    if isinstance(targets, Scenes):
        return targets
    items = list(targets)
    scenes = [parse_caption(x, config) if isinstance(x, str) else x for x in items]
    return Scenes.from_list(scenes, config)


@dataclass
class Agreement:
    """Boolean hits: colour, shape [N, T]; direction, speed, motion [N, T-1]."""

    colour: np.ndarray
    shape: np.ndarray
    direction: np.ndarray
    speed: np.ndarray
    motion: np.ndarray


def caption_agreement(fit: FrameFit, scenes: Scenes) -> Agreement:
    """Compare fitted frames of N videos with their N scenes (caption-level attributes only)."""
    config = scenes.config
    if len(scenes) != fit.colour.shape[0]:
        raise ValueError(f"got {len(scenes)} scenes or captions for {fit.colour.shape[0]} videos")
    step = displacements(fit.position, config.grid)  # [N, T-1, 2]
    want = scenes.velocity()[:, None, :]  # [N, 1, 2]
    unit = np.array([DIRECTION_STEPS[d] for d in config.directions])[scenes.direction][:, None, :]
    length = np.abs(step).sum(axis=-1)
    # a step is "in the caption's direction" when it is a positive multiple of the direction's unit step
    along = (step * unit).sum(axis=-1)
    direction = (along > 0) & (along == length)
    return Agreement(
        colour=fit.colour == scenes.colour[:, None],
        shape=fit.shape == scenes.shape[:, None],
        direction=direction,
        speed=length == np.abs(want).sum(axis=-1),
        motion=(step == want).all(axis=-1),
    )

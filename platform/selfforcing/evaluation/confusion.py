"""Which way did the object go, against which way the caption said: a confusion of fitted vs captioned motion.

``direction_agreement`` says how often a step goes the caption's way; when it is low, it does not say
*how* the other steps went. ``step_confusion`` sorts every fitted step (frame t-1 -> t) into one of
``STEP_CLASSES`` relative to the caption's velocity, so a model that knows the axis but not the sign (its
wrong steps are ``opposite``) reads differently from one that does not know the axis (``other_axis``) or
one that moves by the wrong number of cells (``wrong_speed``). ``velocity_confusion`` is the full table:
captioned velocity x fitted (wrapped) step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfforcing.data.toyworld.config import DIRECTION_STEPS
from selfforcing.data.toyworld.scenes import Scenes

from .fitting import FrameFit
from .trajectory import displacements, wrap

# Every step falls in exactly one class; "exact" is motion agreement, "exact" + "wrong_speed" is direction.
STEP_CLASSES = ("exact", "wrong_speed", "opposite", "other_axis", "still", "diagonal")


@dataclass
class StepConfusion:
    """Fractions of steps per class, overall and per captioned direction.

    ``fractions``: {class: fraction of all steps}; ``by_direction``: {direction word: {class: fraction}};
    ``counts``: int64 [directions, classes] in the order of the world's directions and ``STEP_CLASSES``.
    """

    fractions: dict[str, float]
    by_direction: dict[str, dict[str, float]]
    counts: np.ndarray


def classify_steps(step: np.ndarray, unit: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """int64 class indices into ``STEP_CLASSES`` for wrapped steps [..., 2] against the caption's unit
    direction [..., 2] and velocity [..., 2] (broadcast)."""
    along = (step * unit).sum(axis=-1)  # signed length along the caption's axis
    length = np.abs(step).sum(axis=-1)
    on_axis = np.abs(along) == length  # the step has no component across the caption's axis
    across = (step * unit[..., ::-1]).sum(axis=-1) != 0  # a component along the other axis
    out = np.full(step.shape[:-1], STEP_CLASSES.index("diagonal"), dtype=np.int64)
    out[(length > 0) & ~on_axis & (np.abs(along) == 0) & across] = STEP_CLASSES.index("other_axis")
    out[on_axis & (along < 0)] = STEP_CLASSES.index("opposite")
    out[on_axis & (along > 0)] = STEP_CLASSES.index("wrong_speed")
    out[(step == velocity).all(axis=-1)] = STEP_CLASSES.index("exact")
    out[length == 0] = STEP_CLASSES.index("still")
    return out


def step_confusion(fit: FrameFit, scenes: Scenes) -> StepConfusion:
    """Classify every fitted step of N videos against their N scenes (captions); see ``STEP_CLASSES``."""
    config = scenes.config
    if len(scenes) != fit.position.shape[0]:
        raise ValueError(f"got {len(scenes)} scenes or captions for {fit.position.shape[0]} videos")
    step = displacements(fit.position, config.grid)  # [N, T-1, 2]
    unit = np.array([DIRECTION_STEPS[d] for d in config.directions])[scenes.direction][:, None, :]
    classes = classify_steps(step, unit, scenes.velocity()[:, None, :])  # [N, T-1]
    counts = np.zeros((len(config.directions), len(STEP_CLASSES)), dtype=np.int64)
    np.add.at(counts, (np.repeat(scenes.direction, classes.shape[1]), classes.reshape(-1)), 1)
    total = max(int(counts.sum()), 1)
    fractions = {c: float(counts[:, i].sum()) / total for i, c in enumerate(STEP_CLASSES)}
    by_direction = {
        d: {c: float(counts[k, i]) / max(int(counts[k].sum()), 1) for i, c in enumerate(STEP_CLASSES)}
        for k, d in enumerate(config.directions)
    }
    return StepConfusion(fractions, by_direction, counts)


def velocity_confusion(fit: FrameFit, scenes: Scenes) -> tuple[list[tuple[int, int]], list[tuple[int, int]], np.ndarray]:
    """(captioned velocities V, fitted steps S, counts int64 [V, S]): how often each captioned (row, col)
    velocity produced each (row, col) step. Both are wrapped as ``trajectory.wrap`` does, so S is every
    step the torus allows and V the world's direction x speed combinations."""
    grid = scenes.config.grid
    steps = displacements(fit.position, grid).reshape(-1, 2)
    v = scenes.velocity()
    want = np.repeat(np.stack([wrap(v[:, 0], grid[0]), wrap(v[:, 1], grid[1])], -1), fit.position.shape[1] - 1, 0)
    velocities = sorted({(int(a), int(b)) for a, b in want})
    axes = [range(-(g // 2), g - g // 2) for g in grid]
    cells = [(r, c) for r in axes[0] for c in axes[1]]
    v_index = {x: i for i, x in enumerate(velocities)}
    s_index = {x: i for i, x in enumerate(cells)}
    counts = np.zeros((len(velocities), len(cells)), dtype=np.int64)
    np.add.at(counts, ([v_index[(a, b)] for a, b in want.tolist()], [s_index[(a, b)] for a, b in steps.tolist()]), 1)
    return velocities, cells, counts

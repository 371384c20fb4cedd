"""Motion on the torus: wrapped displacements and the best constant-velocity trajectory.

Rows and columns are independent on a torus, so the best line p(t) = (p0 + v t) mod g is found per axis by
trying every offset p0 and every integer velocity v in [0, g) (all cell velocities, as residues), scoring
the squared wrapped distance to the fitted positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def wrap(delta: np.ndarray, size: int) -> np.ndarray:
    """Signed shortest displacement on a cycle of ``size`` cells, in [-size//2, size - size//2)."""
    return (delta + size // 2) % size - size // 2


def displacements(position: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """int64 [N, T-1, 2]: wrapped (row, col) step from frame t-1 to frame t, for positions [N, T, 2]."""
    step = np.diff(position, axis=1)
    return np.stack([wrap(step[..., 0], grid[0]), wrap(step[..., 1], grid[1])], axis=-1)


def moving_steps(position: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool [N, T-1]: whether the object moved at all from frame t-1 to frame t (positions [N, T, 2])."""
    return (displacements(position, grid) != 0).any(axis=-1)


@dataclass
class TrajectoryFit:
    """Best constant-velocity trajectory per video."""

    start: np.ndarray  # int64 [N, 2], cell at frame 0
    velocity: np.ndarray  # int64 [N, 2], wrapped cells per frame
    distance: np.ndarray  # float64 [N, T], toroidal distance (cells) of each fitted position to the line


def _fit_axis(p: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p: [N, T] positions on a cycle of g -> (offset [N], velocity [N], squared distance [N, T])."""
    n, t = p.shape
    cand = np.arange(g)
    line = cand[:, None, None] + cand[None, :, None] * np.arange(t)[None, None, :]  # [g(o), g(v), T]
    err = wrap(p[:, None, None, :] - line[None], g).astype(np.float64) ** 2  # [N, g, g, T]
    flat = err.sum(axis=-1).reshape(n, g * g).argmin(axis=1)
    o, v = np.divmod(flat, g)
    return o, wrap(v, g), err.reshape(n, g * g, t)[np.arange(n), flat]


def fit_trajectory(position: np.ndarray, grid: tuple[int, int]) -> TrajectoryFit:
    """Least-squares constant-velocity fit of positions [N, T, 2] on a (rows, cols) torus."""
    o_r, v_r, e_r = _fit_axis(position[..., 0], grid[0])
    o_c, v_c, e_c = _fit_axis(position[..., 1], grid[1])
    return TrajectoryFit(
        start=np.stack([o_r, o_c], axis=1),
        velocity=np.stack([v_r, v_c], axis=1),
        distance=np.sqrt(e_r + e_c),
    )

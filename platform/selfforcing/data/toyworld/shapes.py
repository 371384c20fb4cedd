"""Object shapes of the toy world as boolean pixel masks, behind a small registry.

A shape is a function ``size -> bool[size, size]`` (True = object pixel). Masks must differ from each
other at the configured object size, otherwise the fitter in ``selfforcing.evaluation`` could not tell
them apart; ``ToyWorldConfig`` checks that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ShapeFn = Callable[[int], np.ndarray]


def _centred(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] along rows and columns, shapes [size, 1] and [1, size]."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return c[:, None], c[None, :]


def square(size: int) -> np.ndarray:
    """Every pixel of the object's block."""
    return np.ones((size, size), dtype=bool)


def cross(size: int) -> np.ndarray:
    """A plus sign: the middle half of the rows and of the columns (12 of 16 pixels at size 4)."""
    u, v = _centred(size)
    return (np.abs(u) < 0.5) | (np.abs(v) < 0.5)


def ring(size: int) -> np.ndarray:
    """A hollow square: the outer quarter on each side (12 of 16 pixels at size 4)."""
    u, v = _centred(size)
    return (np.abs(u) > 0.5) | (np.abs(v) > 0.5)


SHAPES: dict[str, ShapeFn] = {"square": square, "cross": cross, "ring": ring}


def shape_mask(name: str, size: int) -> np.ndarray:
    """The bool[size, size] mask of shape ``name``; unknown names fail with the valid ones."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; valid shapes are {sorted(SHAPES)}")
    return SHAPES[name](size)

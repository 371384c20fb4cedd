"""Scene parameters of the toy world, their captions, and captions back to parameters.

A scene is one object: colour, shape, start cell, direction and speed. Batches are kept as index arrays
(``Scenes``) so rendering and evaluation stay vectorised; ``Scene`` is the readable single-scene view.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import DIRECTION_STEPS, ToyWorldConfig


@dataclass(frozen=True)
class Scene:
    """One scene by name. ``start`` (row, col) in cells is None for a scene read from a caption."""

    colour: str
    shape: str
    direction: str
    speed: str
    start: tuple[int, int] | None = None


@dataclass
class Scenes:
    """A batch of N scenes as indices into the config's class lists.

    colour, shape, direction, speed: int64 [N]; start: int64 [N, 2] (row, col) in cells, or -1 where unknown
    (scenes parsed from captions).
    """

    config: ToyWorldConfig
    colour: np.ndarray
    shape: np.ndarray
    direction: np.ndarray
    speed: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.colour)

    def __getitem__(self, i: int) -> Scene:
        c = self.config
        start = tuple(int(x) for x in self.start[i])
        return Scene(
            colour=list(c.colours)[self.colour[i]],
            shape=c.shapes[self.shape[i]],
            direction=c.directions[self.direction[i]],
            speed=list(c.speeds)[self.speed[i]],
            start=None if min(start) < 0 else start,
        )

    def velocity(self) -> np.ndarray:
        """int64 [N, 2]: (row, col) cells moved per frame."""
        steps = np.array([DIRECTION_STEPS[d] for d in self.config.directions], dtype=np.int64)
        cells = np.array(list(self.config.speeds.values()), dtype=np.int64)
        return steps[self.direction] * cells[self.speed][:, None]

    def captions(self) -> list[str]:
        return [caption(self[i]) for i in range(len(self))]

    def to_columns(self) -> dict[str, list]:
        """Readable columns (names, not indices) for a dataset's extra columns."""
        rows = [self[i] for i in range(len(self))]
        return {
            "colour": [s.colour for s in rows],
            "shape": [s.shape for s in rows],
            "direction": [s.direction for s in rows],
            "speed": [s.speed for s in rows],
            "start_row": [int(r) for r in self.start[:, 0]],
            "start_col": [int(c) for c in self.start[:, 1]],
        }

    @classmethod
    def from_list(cls, scenes: Sequence[Scene], config: ToyWorldConfig) -> Scenes:
        """Index arrays for named scenes; fails naming a word that the config does not know."""

        def index(options: Sequence[str], word: str, what: str) -> int:
            if word not in options:
                raise ValueError(f"unknown {what} {word!r}; this world's {what}s are {list(options)}")
            return list(options).index(word)

        c = config
        return cls(
            config=c,
            colour=np.array([index(list(c.colours), s.colour, "colour") for s in scenes], dtype=np.int64),
            shape=np.array([index(c.shapes, s.shape, "shape") for s in scenes], dtype=np.int64),
            direction=np.array([index(c.directions, s.direction, "direction") for s in scenes], dtype=np.int64),
            speed=np.array([index(list(c.speeds), s.speed, "speed") for s in scenes], dtype=np.int64),
            start=np.array([s.start if s.start is not None else (-1, -1) for s in scenes],
                           dtype=np.int64).reshape(len(scenes), 2),
        )

    @classmethod
    def from_columns(cls, columns: dict[str, Sequence], config: ToyWorldConfig) -> Scenes:
        """Inverse of ``to_columns``."""
        n = len(columns["colour"])
        scenes = [
            Scene(
                colour=columns["colour"][i], shape=columns["shape"][i],
                direction=columns["direction"][i], speed=columns["speed"][i],
                start=(int(columns["start_row"][i]), int(columns["start_col"][i])),
            )
            for i in range(n)
        ]
        return cls.from_list(scenes, config)


def sample_scenes(n: int, rng: np.random.Generator | int, config: ToyWorldConfig | None = None) -> Scenes:
    """N scenes drawn uniformly over every class and every start cell; same rng state -> same scenes."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    config = config or ToyWorldConfig()
    rng = np.random.default_rng(rng)
    rows, cols = config.grid
    return Scenes(
        config=config,
        colour=rng.integers(0, len(config.colours), n),
        shape=rng.integers(0, len(config.shapes), n),
        direction=rng.integers(0, len(config.directions), n),
        speed=rng.integers(0, len(config.speeds), n),
        start=np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], axis=1).astype(np.int64),
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def seed_uniforms(seeds: Sequence[int], field: int) -> np.ndarray:
    """float64 [N] in [0, 1): draw ``field`` of each seed, a hash of (seed, field) alone, vectorised.

    Per-seed draws that do not depend on which other seeds share the batch (training data that is a
    pure function of each sample's seed), without a random generator object per sample.
    """
    x = _splitmix64(np.asarray([int(s) & 0xFFFFFFFFFFFFFFFF for s in seeds], dtype=np.uint64))
    x = _splitmix64(x ^ np.uint64(field))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def scenes_from_seeds(seeds: Sequence[int], config: ToyWorldConfig | None = None) -> Scenes:
    """One scene per seed, uniform over every class and start cell; scene i depends on ``seeds[i]`` only."""
    config = config or ToyWorldConfig()
    rows, cols = config.grid

    def pick(field: int, n: int) -> np.ndarray:
        return np.minimum((seed_uniforms(seeds, field) * n).astype(np.int64), n - 1)

    return Scenes(
        config=config, colour=pick(0, len(config.colours)), shape=pick(1, len(config.shapes)),
        direction=pick(2, len(config.directions)), speed=pick(3, len(config.speeds)),
        start=np.stack([pick(4, rows), pick(5, cols)], axis=1),
    )


def caption(scene: Scene) -> str:
    """'a red square moving left slowly'."""
    return f"a {scene.colour} {scene.shape} moving {scene.direction} {scene.speed}"


def parse_caption(text: str, config: ToyWorldConfig | None = None) -> Scene:
    """The scene a caption describes (start unknown); fails naming the caption and the expected form."""
    config = config or ToyWorldConfig()
    words = text.strip().lower().split()
    form = "'a <colour> <shape> moving <direction> <speed>'"
    if len(words) != 6 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"caption {text!r} does not have the form {form}")
    scene = Scene(colour=words[1], shape=words[2], direction=words[4], speed=words[5])
    Scenes.from_list([scene], config)  # validates every word against the world
    return scene


def caption_combinations(config: ToyWorldConfig | None = None) -> list[str]:
    """Every distinct caption of the world (a complete prompt set), in a fixed order."""
    config = config or ToyWorldConfig()
    return [
        caption(Scene(colour=c, shape=s, direction=d, speed=v))
        for c, s, d, v in itertools.product(config.colours, config.shapes, config.directions, config.speeds)
    ]

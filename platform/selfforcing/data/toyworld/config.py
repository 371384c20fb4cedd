"""The toy world's numbers, in one validated config.

Default world (every number derives from the fields below):

- Frames are 10x10 RGB on a grey background (the ``toy`` preset's video size). The image is a torus of
  5x5 **cells** of 2x2 pixels. (Written videos are upscaled for viewing; the model sees 10x10.)
- The latent map is an exact 2x pixel-unshuffle scaled by ``latent_scale``: a frame becomes a 12x5x5
  latent (3 * 2 * 2 channels) with about unit variance. With the DiT's patch (1, 1, 1) one token is one
  latent pixel = 2x2 image pixels = **one cell**, so a frame is 25 tokens and an object of one cell is
  exactly one token of 12 values. (An earlier default, 20x20 frames with 48 values per token against the
  toy DiT's width of 64, left the network too little room to carry its own input noise through, which
  the v-parameterisation needs at high noise: docs/results/toyworld.md.)
- One object (6 colours, 1 shape by default) moves 1 ("slowly") or 2 ("quickly") cells per frame in one of
  4 directions and wraps around the edges. Every move is a whole-token shift of the token grid, so the
  motion a model has to learn is a permutation of tokens, not a sub-pixel resampling.
- No temporal compression: one latent frame is one video frame (the real Wan VAE compresses time 4x; the
  toy codec does not, so frame counts below are latent and pixel frames at once). Training videos have 12
  frames (4 chunks of 3); evaluation extrapolates to 36.

Opposite moves must stay distinguishable on the torus: a shift of ``s`` cells equals a shift of ``-s`` when
``2s`` is a multiple of the grid size, so such speeds are rejected.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from selfforcing.config.schema import StrictModel

from .shapes import SHAPES, shape_mask

Direction = Literal["left", "right", "up", "down"]

# (row, column) step of each direction, in cells per unit of speed. Rows grow downwards.
DIRECTION_STEPS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}

DEFAULT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}


class ToyWorldConfig(StrictModel):
    """A synthetic captioned video world that a toy-size DiT can learn on a CPU in minutes."""

    height: int = Field(10, gt=0, description="frame height in pixels (a multiple of cell_size)")
    width: int = Field(10, gt=0, description="frame width in pixels (a multiple of cell_size)")
    cell_size: int = Field(
        2, gt=0, description="pixels per grid cell side; latent_factor * DiT patch side = one token"
    )
    latent_factor: int = Field(2, gt=0, description="pixel-unshuffle factor of the latent map")
    latent_scale: float = Field(
        5.0, gt=0,
        description="latents = latent_scale * pixel_unshuffle(pixels in [-1, 1]); 5 gives the default world "
        "(one object cell of 25 at +-1, grey ~0 elsewhere, raw std ~0.2) unit-variance latents",
    )
    object_cells: int = Field(1, gt=0, description="side of the moving object, in cells")
    num_frames: int = Field(12, gt=0, description="frames per training video (= latent frames)")
    frames_per_chunk: int = Field(3, gt=0, description="frames generated per autoregressive step")
    eval_num_frames: int = Field(36, gt=0, description="frames generated at evaluation (extrapolation)")
    colours: dict[str, tuple[int, int, int]] = Field(
        default_factory=lambda: dict(DEFAULT_COLOURS), description="colour word -> RGB (0..255)"
    )
    shapes: list[str] = Field(["square"], description=f"shape words, from {sorted(SHAPES)}")
    directions: list[Direction] = Field(
        ["left", "right", "up", "down"], description="direction words an object may move in"
    )
    speeds: dict[str, int] = Field(
        {"slowly": 1, "quickly": 2}, description="speed word -> cells moved per frame"
    )
    background: tuple[int, int, int] = Field((128, 128, 128), description="background RGB (0..255)")
    seed: int = Field(0, description="default seed of datasets sampled from this world")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of cells; positions live on this torus."""
        return self.height // self.cell_size, self.width // self.cell_size

    @property
    def object_size(self) -> int:
        """Side of the object's pixel block."""
        return self.object_cells * self.cell_size

    @property
    def latent_channels(self) -> int:
        """Channels of the pixel-unshuffle latent: 3 * latent_factor**2."""
        return 3 * self.latent_factor**2

    @property
    def latent_frame_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent frame."""
        f = self.latent_factor
        return self.latent_channels, self.height // f, self.width // f

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The DiT patch (frames, rows, cols) that makes exactly one token per cell."""
        p = self.cell_size // self.latent_factor
        return 1, p, p

    @property
    def tokens_per_frame(self) -> int:
        """Tokens per latent frame with ``patch_size``: one per cell."""
        rows, cols = self.grid
        return rows * cols

    def vocabulary(self) -> list[str]:
        """Every caption word, in a fixed order (for a locally built word-level tokenizer)."""
        return ["a", *self.colours, *self.shapes, "moving", *self.directions, *self.speeds]

    # -- validation ------------------------------------------------------------------------------
    @model_validator(mode="after")
    def _check_world(self) -> ToyWorldConfig:
        self._check_geometry()
        self._check_classes()
        self._check_speeds()
        return self

    def _check_geometry(self) -> None:
        for axis, size in (("height", self.height), ("width", self.width)):
            if size % self.cell_size:
                raise ValueError(f"{axis}={size} must be a multiple of cell_size={self.cell_size}")
        if self.cell_size % self.latent_factor:
            raise ValueError(
                f"cell_size={self.cell_size} must be a multiple of latent_factor={self.latent_factor} "
                "so that a cell is a whole number of latent pixels"
            )
        if self.object_cells > min(self.grid):
            raise ValueError(f"object_cells={self.object_cells} must be <= the grid size {self.grid}")
        if self.eval_num_frames < self.num_frames:
            raise ValueError(
                f"eval_num_frames={self.eval_num_frames} must be >= num_frames={self.num_frames}"
            )

    def _check_classes(self) -> None:
        for name, values in (("colours", self.colours), ("shapes", self.shapes),
                             ("directions", self.directions), ("speeds", self.speeds)):
            if len(values) == 0:
                raise ValueError(f"{name} must hold at least one entry")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={list(values)} holds duplicates")
        words = self.vocabulary()
        repeated = sorted({w for w in words if words.count(w) > 1})
        if repeated:
            raise ValueError(f"caption words {repeated} appear in two categories; captions would be ambiguous")
        for name, rgb in [*self.colours.items(), ("background", self.background)]:
            if any(not 0 <= c <= 255 for c in rgb):
                raise ValueError(f"colour {name}={rgb} must have components in 0..255")
        if len(set(self.colours.values())) != len(self.colours):
            raise ValueError(f"colours={self.colours} map two words to the same RGB")
        if self.background in self.colours.values():
            raise ValueError(f"background={self.background} equals an object colour; objects would vanish")
        masks = [shape_mask(s, self.object_size) for s in self.shapes]
        for i in range(len(masks)):
            for j in range(i):
                if (masks[i] == masks[j]).all():
                    raise ValueError(
                        f"shapes {self.shapes[j]!r} and {self.shapes[i]!r} are identical at object size "
                        f"{self.object_size} px; raise object_cells or drop one"
                    )

    def _check_speeds(self) -> None:
        rows, cols = self.grid
        axes = {DIRECTION_STEPS[d][1] != 0 for d in self.directions}  # True = horizontal
        sizes = [cols if horizontal else rows for horizontal in axes]
        for word, s in self.speeds.items():
            if s <= 0:
                raise ValueError(f"speed {word}={s} must be a positive number of cells per frame")
            for g in sizes:
                if (2 * s) % g == 0:
                    raise ValueError(
                        f"speed {word}={s} cells/frame on a torus of {g} cells makes opposite directions "
                        f"identical (2*speed is a multiple of {g}); use a speed with 2*speed % {g} != 0"
                    )
        for g in sizes:
            residues = {}
            for word, s in self.speeds.items():
                key = min(s % g, (-s) % g)
                if key in residues:
                    raise ValueError(
                        f"speeds {residues[key]}={self.speeds[residues[key]]} and {word}={s} look the same "
                        f"on a torus of {g} cells"
                    )
                residues[key] = word

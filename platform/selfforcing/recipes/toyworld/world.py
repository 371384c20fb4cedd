"""The toy world as a source of training batches: fresh rendered videos, their latents and captions.

Text embeddings come from the preset's frozen random-weight ``TextEncoder``; the world has only a few
dozen captions, so every caption (and the negative prompt) is encoded once, in one batch, into a table on
the device, and a training batch looks its rows up by scene index. Videos are rendered on the CPU and
encoded on the device: on a GPU a step is then not spent on per-scene Python or CPU pixel shuffles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from selfforcing.config import PlatformConfig
from selfforcing.data.toyworld import (
    PixelUnshuffleLatents,
    Scenes,
    ToyWorldConfig,
    caption_combinations,
    parse_caption,
    render,
    sample_scenes,
    scenes_from_seeds,
)
from selfforcing.models.text_encoder import TextEncoder


def world_for(config: PlatformConfig) -> ToyWorldConfig:
    """The toy world whose frames and latents match the platform config's video and codec.

    Its ``frames_per_chunk`` (3) is the evaluation's chunk, whatever the generator's chunking: a
    frame-wise model is then measured per 3 frames too, so the per-chunk curves are comparable.
    """
    v = config.video
    factor = config.vae.spatial_compression
    _, ph, pw = config.model.patch_size
    if ph != pw:
        raise ValueError(f"model.patch_size={config.model.patch_size} must be square for the toy world's cells")
    world = ToyWorldConfig(
        height=v.height, width=v.width, num_frames=v.num_frames, latent_factor=factor, cell_size=factor * ph,
        latent_scale=config.vae.latent_scale,
    )
    if world.latent_channels != config.model.in_dim:
        raise ValueError(
            f"the toy world's latents have {world.latent_channels} channels, the model takes "
            f"model.in_dim={config.model.in_dim}; use the 'toy' preset"
        )
    return world


@dataclass
class Batch:
    """latents [B, F, C, h, w] (the world's scaled codec), text [B, L, D], and the scenes they show."""

    latents: torch.Tensor
    text: torch.Tensor
    scenes: Scenes
    captions: list[str]


class ToyData:
    """Captions -> embeddings (cached), scenes -> latents; everything on ``device``."""

    def __init__(
        self, config: PlatformConfig, device: torch.device | str = "cpu", world: ToyWorldConfig | None = None
    ) -> None:
        """``world``: another world of the same geometry (fewer colours or directions, for experiments);
        default ``world_for(config)``."""
        self.config = config
        self.world = world or world_for(config)
        if world is not None and world.latent_frame_shape != world_for(config).latent_frame_shape:
            raise ValueError(
                f"world latents {world.latent_frame_shape} do not match the config's "
                f"{world_for(config).latent_frame_shape}"
            )
        self.device = torch.device(device)
        self.codec = PixelUnshuffleLatents(self.world.latent_factor, self.world.latent_scale)
        self.encoder = TextEncoder.from_config(config.text_encoder)
        self.negative_prompt = config.generation.negative_prompt
        self._cache: dict[str, torch.Tensor] = {}
        # Every caption in scene-index order (colour, shape, direction, speed raveled) + the negative prompt.
        w = self.world
        self._dims = (len(w.colours), len(w.shapes), len(w.directions), len(w.speeds))
        self._captions = caption_combinations(w)
        self._table = self.embed([*self._captions, self.negative_prompt])  # [K + 1, L, D] on device

    @property
    def captions(self) -> list[str]:
        """Every caption of the world, in a fixed order."""
        return list(self._captions)

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """[B, text_len, text_dim] embeddings on the device, each prompt encoded once per process."""
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            for p, e in zip(missing, self.encoder.encode(missing).to(self.device), strict=True):
                self._cache[p] = e
        return torch.stack([self._cache[p] for p in prompts])

    def negative(self, batch: int) -> torch.Tensor:
        """The unconditional (negative prompt) embedding repeated ``batch`` times."""
        return self.embed([self.negative_prompt] * batch)

    def batch(self, n: int, rng: np.random.Generator, caption_dropout: float = 0.0,
              num_frames: int | None = None) -> Batch:
        """``n`` fresh random scenes rendered to latents; a ``caption_dropout`` fraction get the empty
        prompt (the unconditional branch that classifier-free guidance needs)."""
        scenes = sample_scenes(n, rng, self.world)
        return self.scenes_batch(scenes, num_frames, rng.random(n) < caption_dropout)

    def seeded_batch(self, seeds: Sequence[int], num_frames: int | None = None) -> Batch:
        """One scene per seed (``scenes_from_seeds``: scene i depends on ``seeds[i]`` alone), rendered in
        one vectorised call: training batches that are pure functions of each sample's seed."""
        return self.scenes_batch(scenes_from_seeds(seeds, self.world), num_frames)

    def scenes_batch(self, scenes: Scenes, num_frames: int | None = None, drop: np.ndarray | None = None) -> Batch:
        """Latents and caption embeddings of ``scenes``; rows where ``drop`` get the negative prompt."""
        n = len(scenes)
        videos = render(scenes, num_frames or self.world.num_frames)
        ids = np.ravel_multi_index((scenes.colour, scenes.shape, scenes.direction, scenes.speed), self._dims)
        rows = ids if drop is None else np.where(drop, len(self._captions), ids)  # last row: negative prompt
        text = self._table[torch.from_numpy(np.asarray(rows, dtype=np.int64).reshape(n)).to(self.device)]
        latents = self.codec.encode(torch.from_numpy(videos).to(self.device))
        return Batch(latents, text, scenes, [self._captions[i] for i in ids])

    def render_captions(self, prompts: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        """uint8 videos [N, T, H, W, 3] showing exactly the captioned scenes, from random start cells."""
        rows, cols = self.world.grid
        scenes = [parse_caption(p, self.world) for p in prompts]
        starts = np.stack([rng.integers(0, rows, len(scenes)), rng.integers(0, cols, len(scenes))], axis=1)
        placed = [replace(s, start=(int(r), int(c))) for s, (r, c) in zip(scenes, starts, strict=True)]
        return render(Scenes.from_list(placed, self.world), self.world.num_frames)

    def latent_shape(self, frames: int) -> tuple[int, int, int, int]:
        """(F, C, h, w) of ``frames`` latent frames."""
        return (frames, *self.world.latent_frame_shape)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 videos [B, F, H, W, 3] of latents [B, F, C, h, w]."""
        return self.codec.decode_uint8(latents.detach().cpu())

"""Where each step's global batch comes from, as a pure function of (step, sample index).

A training step's global batch holds ``batch_size`` samples; sample ``i`` of step ``k`` is the same
prompt (and the same real latents) whichever worker, micro-batch or process asks for it. That is what
lets one process, 2 workers, or 1 worker with gradient accumulation compute the same numbers, and what
makes the data position of a checkpoint just the step number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from ..config import PlatformConfig, video_geometry
from ..forcing.self_forcing import sample_seed
from .generator import TrainBatch

REAL_LATENT_STREAM = 11  # sample_seed stream of the random source's real latents
PROMPT_ORDER_STREAM = 12


class BatchSource(Protocol):
    """A global batch by sample indices: ``batch(step, ids)`` holds samples ``ids`` of step ``step``."""

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch: ...


class RandomSource:
    """Seeded random prompt embeddings (``num_prompts`` of them, cycled in a per-epoch shuffled order), a
    random negative prompt and Gaussian "real" latents: for tests and tiny runs, no text encoder."""

    def __init__(
        self, platform: PlatformConfig, batch_size: int, num_prompts: int, real_frames: int, seed: int = 0,
        with_real: bool = True,
    ) -> None:
        m = platform.model
        g = torch.Generator().manual_seed(int(seed))
        self.prompts = torch.randn(num_prompts, m.text_len, m.text_dim, generator=g)
        self.negative = torch.randn(1, m.text_len, m.text_dim, generator=g)
        geo = video_geometry(platform)
        self.latent_shape = (real_frames, m.in_dim, geo.latent_height, geo.latent_width)
        self.batch_size, self.seed, self.with_real = batch_size, int(seed), with_real

    def prompt_index(self, step: int, sample_id: int) -> int:
        """Prompts in a shuffled order per pass over the set (an epoch), the same on every process."""
        n = len(self.prompts)
        position = step * self.batch_size + sample_id
        epoch, offset = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0, PROMPT_ORDER_STREAM)))
        return int(order[offset])

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch:
        ids = [int(i) for i in sample_ids]
        text = self.prompts[[self.prompt_index(step, i) for i in ids]]
        real = None
        if self.with_real:
            real = torch.stack([
                torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(
                    sample_seed(self.seed, step, i, REAL_LATENT_STREAM)))
                for i in ids
            ])
        return TrainBatch(text, self.negative.expand(len(ids), -1, -1).clone(), real, tuple(ids))


class ToyWorldSource:
    """The toy world: each sample a fresh random scene (seeded by its step and index), its caption's
    embedding and its latents; the world's empty prompt as the negative."""

    def __init__(self, platform: PlatformConfig, real_frames: int, seed: int = 0) -> None:
        from ..recipes.toyworld.world import ToyData  # the toy world's codec and captions

        self.data = ToyData(platform)
        self.frames, self.seed = real_frames, int(seed)

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch:
        ids = [int(i) for i in sample_ids]
        parts = [self.data.batch(1, np.random.default_rng(sample_seed(self.seed, step, i, REAL_LATENT_STREAM)),
                                 num_frames=self.frames) for i in ids]
        return TrainBatch(
            torch.cat([p.text for p in parts]), self.data.negative(len(ids)),
            torch.cat([p.latents for p in parts]), tuple(ids),
        )

"""Where each step's global batch comes from, as a pure function of (step, sample index).

A training step's global batch holds ``batch_size`` samples; sample ``i`` of step ``k`` is the same
prompt (and the same real latents) whichever worker, micro-batch or process asks for it. That is what
lets one process, 2 workers, or 1 worker with gradient accumulation compute the same numbers, and what
makes the data position of a checkpoint just the step number.

Datasets are read by row index (``data.indexed.IndexedRows``, whose docstring says why not through
``streaming_split``): sample ``i`` of step ``k`` is row ``SampleOrder.index(k, i)``, a fresh permutation of
the rows per pass (epoch), the same on every process.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import torch

from ..config import PlatformConfig, video_geometry
from ..forcing.self_forcing import sample_seed, sample_seeds
from .generator import TrainBatch

REAL_LATENT_STREAM = 11  # sample_seed stream of the random source's real latents
PROMPT_ORDER_STREAM = 12


class BatchSource(Protocol):
    """A global batch by sample indices: ``batch(step, ids)`` holds samples ``ids`` of step ``step``."""

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch: ...


class SampleOrder:
    """Which of ``n`` items sample ``i`` of step ``k`` is: position k * batch_size + i of an endless
    sequence of passes, each pass a seeded permutation of the items (the same on every process)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, stream: int = PROMPT_ORDER_STREAM) -> None:
        if n < 1:
            raise ValueError(f"a sample order needs at least one item, got n={n}")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, int(seed), stream
        self._permutation = lru_cache(maxsize=4)(self._draw)

    def _draw(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0, self.stream))
        return torch.randperm(self.n, generator=g)

    def index(self, step: int, sample_id: int) -> int:
        epoch, offset = divmod(step * self.batch_size + sample_id, self.n)
        return int(self._permutation(epoch)[offset])


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
        self.order = SampleOrder(num_prompts, batch_size, seed)

    def prompt_index(self, step: int, sample_id: int) -> int:
        """Prompts in a shuffled order per pass over the set (an epoch), the same on every process."""
        return self.order.index(step, sample_id)

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
    embedding and its latents; the world's negative prompt as the negative."""

    def __init__(self, platform: PlatformConfig, real_frames: int, seed: int = 0) -> None:
        from ..recipes.toyworld.world import ToyData  # the toy world's codec and captions

        self.data = ToyData(platform)
        self.frames, self.seed = real_frames, int(seed)

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch:
        ids = [int(i) for i in sample_ids]
        b = self.data.seeded_batch(sample_seeds(self.seed, step, ids, REAL_LATENT_STREAM), num_frames=self.frames)
        return TrainBatch(b.text, self.data.negative(len(ids)), b.latents, tuple(ids))


def _pad_text(text: torch.Tensor, length: int, what: str) -> torch.Tensor:
    """[B, n, D] -> [B, length, D] with zero rows (Wan zero-pads past each prompt's tokens)."""
    if text.shape[1] > length:
        raise ValueError(f"{what} hold {text.shape[1]} text positions, the model takes model.text_len={length}")
    return torch.nn.functional.pad(text, (0, 0, 0, length - text.shape[1]))


def _check_text_dims(dims: set[int], platform: PlatformConfig, path: str) -> None:
    if dims != {platform.model.text_dim}:
        raise ValueError(
            f"embeddings in {path!r} have widths {sorted(dims)}; the model takes model.text_dim="
            f"{platform.model.text_dim} (encode them with this preset's text encoder)"
        )


class EmbeddingsSource:
    """Prompt embeddings from an ``embeddings`` dataset (``jobs/encode_prompts.py``): sample i of step k
    is row ``SampleOrder.index(k, i)``, with its negative prompt's embedding when the rows carry one."""

    def __init__(
        self, platform: PlatformConfig, path: str, batch_size: int, seed: int = 0, require_negative: bool = False,
    ) -> None:
        from ..data.indexed import IndexedRows

        self.rows = IndexedRows(path, "embeddings")
        self.text_len = platform.model.text_len
        _check_text_dims({int(s[-1]) for s in self.rows.column("embedding_shape")}, platform, path)
        lacking = sum(d is None for d in self.rows.column("negative_embedding_dtype"))
        self.has_negative = lacking == 0
        if require_negative and not self.has_negative:
            raise ValueError(
                f"{lacking} of {len(self.rows)} rows of {path!r} have no negative embedding, which guidance needs; "
                "encode the prompts with encode_negative=true"
            )
        self.order = SampleOrder(len(self.rows), batch_size, seed)

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch:
        from ..data.batches import embedding_batch

        ids = [int(i) for i in sample_ids]
        b = embedding_batch(self.rows.take([self.order.index(step, i) for i in ids]))
        negative = None if b.negative_text is None else _pad_text(b.negative_text.float(), self.text_len, "negatives")
        return TrainBatch(_pad_text(b.text.float(), self.text_len, "embeddings"), negative, None, tuple(ids))


class LatentsSource:
    """Video latents from a ``latents`` dataset, each with its prompt's embedding looked up by prompt text
    in an ``embeddings`` dataset (training workers never load the text encoder)."""

    def __init__(self, platform: PlatformConfig, path: str, embeddings: str, batch_size: int, seed: int = 0) -> None:
        from ..data.indexed import IndexedRows

        self.latents = IndexedRows(path, "latents")
        self.embeddings = IndexedRows(embeddings, "embeddings")
        self.text_len = platform.model.text_len
        _check_text_dims({int(s[-1]) for s in self.embeddings.column("embedding_shape")}, platform, embeddings)
        self.row_of = {p: r for r, p in enumerate(self.embeddings.column("prompt"))}
        self.prompts = self.latents.column("prompt")
        missing = sorted({p for p in self.prompts if p not in self.row_of})
        if missing:
            raise ValueError(f"{len(missing)} prompts of {path!r} have no embedding in {embeddings!r}, e.g. "
                             f"{missing[:3]}; encode them with jobs/encode_prompts.py")
        self.has_negative = all(d is not None for d in self.embeddings.column("negative_embedding_dtype"))
        self.order = SampleOrder(len(self.latents), batch_size, seed)

    def batch(self, step: int, sample_ids: Sequence[int]) -> TrainBatch:
        from ..data.batches import embedding_batch, latent_batch

        ids = [int(i) for i in sample_ids]
        rows = [self.order.index(step, i) for i in ids]
        latents = latent_batch(self.latents.take(rows)).latents.float()
        emb = embedding_batch(self.embeddings.take([self.row_of[self.prompts[r]] for r in rows]))
        negative = None if emb.negative_text is None else _pad_text(emb.negative_text.float(), self.text_len, "negatives")
        return TrainBatch(_pad_text(emb.text.float(), self.text_len, "embeddings"), negative, latents, tuple(ids))

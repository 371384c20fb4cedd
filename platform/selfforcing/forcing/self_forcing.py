"""Self Forcing training rollout (SPEC §4, Algorithm 1) on top of the one rollout loop.

Training runs exactly the inference rollout of ``rollout.py``; this module only decides *where gradient
flows*: which denoising step each chunk exits at (stochastic gradient truncation), how many chunks the
rollout has (variable length), and which chunks form the loss window. All those draws are pure functions
of a seed (``draw_rollout_plan``), so data-parallel ranks that share the seed agree without communicating.
The KV cache is always written without grad (``rollout.write_context``), so no gradient flows from a chunk
into earlier chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..diffusion.schedule import FlowMatchSchedule
from ..models.kv_cache import KVCache
from ..models.wan_dit import WanDiT
from .rollout import NoiseSource, RolloutConfig, rollout

TRUNCATION_MODES = ("shared", "per_chunk", "last")


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for plan draws: identical on every rank and device."""
    return torch.Generator().manual_seed(int(seed))


@dataclass(frozen=True)
class TruncationPlan:
    """How exit steps are drawn: ``shared`` (one draw for all chunks, the release default), ``per_chunk``,
    or ``last`` (always the final step: the no-truncation ablation)."""

    mode: str = "shared"

    def __post_init__(self) -> None:
        if self.mode not in TRUNCATION_MODES:
            raise ValueError(f"unknown truncation mode {self.mode!r}; valid: {list(TRUNCATION_MODES)}")

    def draw(self, num_steps: int, num_chunks: int, generator: torch.Generator) -> list[int]:
        """Exit step index (0-based, < num_steps) for each chunk."""
        if num_steps < 1 or num_chunks < 1:
            raise ValueError(f"need num_steps >= 1 and num_chunks >= 1, got {num_steps}, {num_chunks}")
        if self.mode == "last":
            return [num_steps - 1] * num_chunks
        if self.mode == "shared":
            return [int(torch.randint(num_steps, (1,), generator=generator))] * num_chunks
        return [int(s) for s in torch.randint(num_steps, (num_chunks,), generator=generator)]


@dataclass(frozen=True)
class RolloutPlan:
    """Everything random about one training rollout, shared by all samples and ranks.

    Chunks ``[loss_start_chunk, num_chunks)`` form the loss window. When the rollout is longer than the
    window, the window's first chunk is masked out of the loss and gets no gradient (the release does the
    same: that chunk stands in for the re-encoded first frame of a long video).
    """

    num_chunks: int
    exit_steps: tuple[int, ...]
    loss_start_chunk: int = 0
    mask_first_window_chunk: bool = False

    def __post_init__(self) -> None:
        if len(self.exit_steps) != self.num_chunks:
            raise ValueError(f"{len(self.exit_steps)} exit steps for {self.num_chunks} chunks")
        if not 0 <= self.loss_start_chunk < self.num_chunks:
            raise ValueError(f"loss_start_chunk={self.loss_start_chunk} outside [0, {self.num_chunks})")

    @property
    def first_grad_chunk(self) -> int:
        return self.loss_start_chunk + int(self.mask_first_window_chunk)

    @property
    def grad_chunks(self) -> list[bool]:
        """Chunks whose exit step runs with grad: the loss window minus its masked first chunk."""
        return [i >= self.first_grad_chunk for i in range(self.num_chunks)]


def draw_rollout_plan(
    num_steps: int,
    seed: int,
    truncation: TruncationPlan | str = "shared",
    min_chunks: int = 1,
    max_chunks: int | None = None,
    window_chunks: int | None = None,
) -> RolloutPlan:
    """Draw a rollout's length and exit steps from ``seed`` (pure: same seed -> same plan).

    The number of chunks is uniform in [min_chunks, max_chunks]; the loss window is the last
    ``window_chunks`` (default ``min_chunks``) chunks, and its first chunk is masked when the rollout is
    longer than ``min_chunks``.
    """
    truncation = TruncationPlan(truncation) if isinstance(truncation, str) else truncation
    max_chunks = min_chunks if max_chunks is None else max_chunks
    window_chunks = min_chunks if window_chunks is None else window_chunks
    if not 1 <= min_chunks <= max_chunks:
        raise ValueError(f"need 1 <= min_chunks={min_chunks} <= max_chunks={max_chunks}")
    if not 1 <= window_chunks <= min_chunks:
        raise ValueError(f"window_chunks={window_chunks} must be in [1, min_chunks={min_chunks}]")
    g = seeded_generator(seed)
    num_chunks = int(torch.randint(min_chunks, max_chunks + 1, (1,), generator=g))
    exits = truncation.draw(num_steps, num_chunks, g)
    return RolloutPlan(
        num_chunks=num_chunks,
        exit_steps=tuple(exits),
        loss_start_chunk=num_chunks - window_chunks,
        mask_first_window_chunk=num_chunks > min_chunks,
    )


@dataclass
class GeneratedSample:
    """A generator sample for a distribution-matching loss, plus what the losses need to know about it.

    ``video`` [B, F, C, h, w] is the loss window (gradient only through the exit steps of grad chunks);
    ``grad_mask`` [B, F] marks frames whose gradient counts; ``t_from`` / ``t_to`` [F] give, per frame,
    the timestep its exit step denoised from and towards (``t_to`` = 0 for the last step).
    """

    video: torch.Tensor
    grad_mask: torch.Tensor
    t_from: torch.Tensor
    t_to: torch.Tensor
    exit_steps: list[int] = field(default_factory=list)
    plan: RolloutPlan | None = None

    @property
    def denoised_range(self) -> tuple[float, float]:
        """(lowest t_to, highest t_from) over the window: the noise range the sample was produced in."""
        return float(self.t_to.min()), float(self.t_from.max())


def self_forcing_rollout(
    model: WanDiT,
    text: torch.Tensor,
    plan: RolloutPlan,
    latent_shape: tuple[int, int, int],
    config: RolloutConfig,
    schedule: FlowMatchSchedule,
    noise: NoiseSource,
    *,
    window_frames: int | None = None,
    sink_frames: int = 0,
    cache: KVCache | None = None,
) -> GeneratedSample:
    """Run the inference rollout with a fresh KV cache and return the loss window of the video.

    text [B, L, text_dim]; latent_shape (C, h, w). Under ``torch.no_grad()`` nothing carries gradient
    (critic-step samples); otherwise only the exit step of each grad chunk does. ``cache`` (optional,
    empty) lets a caller inspect the cache afterwards.
    """
    k = config.frames_per_chunk
    b = text.shape[0]
    if len(noise) != b:
        raise ValueError(f"noise has {len(noise)} streams for a batch of {b}")
    if cache is None:
        cache = model.new_kv_cache(
            b, window_frames=window_frames, sink_frames=sink_frames,
            max_frames=None if window_frames else plan.num_chunks * k,
        )
    elif cache.frames_written:
        raise ValueError(f"self_forcing_rollout needs an empty cache, this one holds {cache.frames_written} frames")
    grad = torch.is_grad_enabled()
    grad_chunks = [g and grad for g in plan.grad_chunks]
    chunks = list(
        rollout(model, text, plan.num_chunks, latent_shape, config, schedule, noise, cache,
                exit_steps=plan.exit_steps, grad_chunks=grad_chunks)
    )
    window = chunks[plan.loss_start_chunk:]
    video = torch.cat([c.latents for c in window], dim=1)
    mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
    if plan.mask_first_window_chunk:
        mask[:, :k] = False
    t_from = torch.tensor([c.t_from for c in window for _ in range(k)], dtype=torch.float32)
    t_to = torch.tensor([c.t_to for c in window for _ in range(k)], dtype=torch.float32)
    return GeneratedSample(video, mask, t_from, t_to, [c.exit_step for c in window], plan)


def frames_to_chunks(frames: int, frames_per_chunk: int, what: str = "frames") -> int:
    """Whole chunks in ``frames`` latent frames; a clear error when it is not a multiple."""
    if frames % frames_per_chunk:
        raise ValueError(f"{what}={frames} must be a multiple of frames_per_chunk={frames_per_chunk}")
    return frames // frames_per_chunk


def step_seed(base_seed: int, step: int, stream: int = 0) -> int:
    """A per-step seed every rank computes alike (``stream`` separates independent draws)."""
    return (int(base_seed) * 1_000_003 + int(step) * 7_919 + int(stream) * 104_729) % (2**63 - 1)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def sample_seed(base_seed: int, step: int, sample_id: int, stream: int = 0) -> int:
    """The seed of one sample's draws at one step: a hash of (seed, step, global sample index, stream).

    ``sample_id`` is the sample's position in the step's *global* batch, never a rank: the same global
    batch gives the same noise on 1 worker or on 8, with or without gradient accumulation. ``stream``
    separates independent draws of one sample (rollout noise, critic scoring, critic update, ...).
    """
    x = 0
    for part in (base_seed, step, sample_id, stream):
        x = _splitmix64(x ^ (int(part) & 0xFFFFFFFFFFFFFFFF))
    return x & 0x3FFFFFFFFFFFFFFF


def sample_seeds(base_seed: int, step: int, sample_ids: Sequence[int], stream: int = 0) -> list[int]:
    """Noise seeds of one step's samples, by their global indices (see ``sample_seed``)."""
    return [sample_seed(base_seed, step, i, stream) for i in sample_ids]


def sample_generators(base_seed: int, step: int, sample_ids: Sequence[int], stream: int = 0) -> list[torch.Generator]:
    """One seeded CPU generator per sample (draws independent of batch composition and device)."""
    return [seeded_generator(s) for s in sample_seeds(base_seed, step, sample_ids, stream)]

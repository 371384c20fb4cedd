"""The one autoregressive rollout loop (SPEC §3), shared by inference and Self Forcing training.

For each chunk: start from fresh noise, run the few-step denoiser attending to the KV cache, stop at the
chunk's exit step (the last step at inference; a drawn step under stochastic gradient truncation), then
run the model once more on the (optionally re-noised) output to write the chunk's keys/values. Training
adds only *where gradient is enabled*: the exit step of chosen chunks. Everything else runs under
``no_grad``, and the cache is always detached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..diffusion.samplers import timesteps_like
from ..diffusion.schedule import FlowMatchSchedule
from ..models.kv_cache import KVCache
from ..models.wan_dit import WanDiT


class NoiseSource:
    """Per-sample Gaussian noise streams: sample ``b`` draws from its own seeded generator.

    Batching prompts (or serving streams together) therefore never changes any one stream's noise, so a
    batched generation equals the unbatched one with the same seed. By default the generators live on
    the CPU, so results do not depend on the device (training relies on that). ``device=`` puts them on
    the model's device instead (inference): draws are then asynchronous kernels, with no blocking
    host-to-device copy per denoising step; a seed gives a different (equally valid) stream there.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None) -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device("cpu" if device is None else device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def draw(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Noise [B, *shape]: one independent draw per sample (float32 draws, then cast to ``dtype``)."""
        samples = [
            torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float32) for g in self.generators
        ]
        return torch.stack(samples).to(device=device, dtype=dtype)

    @classmethod
    def from_generators(cls, generators: Sequence[torch.Generator]) -> NoiseSource:
        """A source over existing per-stream generators (streams batched together keep their noise)."""
        out = cls([])
        out.seeds = [g.initial_seed() for g in generators]
        out.generators = list(generators)
        devices = {g.device for g in out.generators}
        if len(devices) > 1:
            raise ValueError(f"generators must share one device, got {sorted(map(str, devices))}")
        out.device = devices.pop() if devices else torch.device("cpu")
        return out

    def select(self, indices: Sequence[int]) -> NoiseSource:
        """A source over a subset of the samples (sharing their generator state)."""
        out = NoiseSource([], self.device)
        out.seeds = [self.seeds[i] for i in indices]
        out.generators = [self.generators[i] for i in indices]
        return out


@dataclass
class ChunkOutput:
    """One generated chunk. ``latents`` [B, k, C, h, w] carry gradient only on training chunks."""

    index: int
    start_frame: int | list[int]  # a list when batched streams sit at different frames
    latents: torch.Tensor
    exit_step: int
    # The exit step denoised from timestep ``t_from`` (its input) towards ``t_to`` (the next step or 0).
    t_from: float
    t_to: float
    given: bool = False  # initial latents written to the cache, not generated


@dataclass
class RolloutConfig:
    """Static settings of a rollout; per-chunk exit steps and gradient flags are per call."""

    timesteps: Sequence[float]
    frames_per_chunk: int
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        if not self.timesteps:
            raise ValueError("timesteps must hold at least one denoising step")
        if self.frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk={self.frames_per_chunk} must be >= 1")


def write_context(
    model: WanDiT,
    latents: torch.Tensor,
    text: torch.Tensor,
    cache: KVCache,
    start_frame: int,
    context_noise: float,
    noise: NoiseSource,
    schedule: FlowMatchSchedule,
) -> None:
    """Run the model on clean (or lightly re-noised) latents at ``context_noise`` to fill the cache."""
    with torch.no_grad():
        x = latents.detach()
        if context_noise > 0:
            eps = noise.draw(x.shape[1:], x.device, x.dtype)
            x = schedule.add_noise(x, eps, timesteps_like(x, context_noise))
        model(x, timesteps_like(x, context_noise), text, kv_cache=cache, start_frame=start_frame)


def rollout(
    model: WanDiT,
    text: torch.Tensor,
    num_chunks: int,
    latent_shape: tuple[int, int, int],
    config: RolloutConfig,
    schedule: FlowMatchSchedule,
    noise: NoiseSource,
    cache: KVCache,
    exit_steps: Sequence[int] | None = None,
    grad_chunks: Sequence[bool] | None = None,
    initial_latents: torch.Tensor | None = None,
) -> Iterator[ChunkOutput]:
    """Yield chunks as soon as they are denoised (streaming); the cache is filled as a side effect.

    text [B, L, text_dim]; latent_shape = (C, h, w); ``num_chunks`` generated chunks of
    ``frames_per_chunk`` frames follow the optional ``initial_latents`` [B, F0, C, h, w], which are
    written to the cache first and yielded as ``given`` chunks. ``exit_steps[i]`` (default: the last
    step) is the step whose x0 becomes chunk i; ``grad_chunks[i]`` enables gradient at that step only.
    """
    steps = list(config.timesteps)
    k = config.frames_per_chunk
    exit_steps = [len(steps) - 1] * num_chunks if exit_steps is None else list(exit_steps)
    grad_chunks = [False] * num_chunks if grad_chunks is None else list(grad_chunks)
    if len(exit_steps) != num_chunks or len(grad_chunks) != num_chunks:
        raise ValueError(
            f"exit_steps ({len(exit_steps)}) and grad_chunks ({len(grad_chunks)}) need one entry per "
            f"chunk ({num_chunks})"
        )
    if any(not 0 <= s < len(steps) for s in exit_steps):
        raise ValueError(f"exit_steps={exit_steps} must index the {len(steps)} denoising steps")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype

    frame = cache.next_frames()
    if initial_latents is not None:
        if not isinstance(frame, int):
            raise ValueError("initial_latents need all cache rows at the same frame")
        given = initial_latents.to(device=device, dtype=dtype)
        for i, a in enumerate(range(0, given.shape[1], k)):
            piece = given[:, a : a + k]
            write_context(model, piece, text, cache, frame, config.context_noise, noise, schedule)
            yield ChunkOutput(i, frame, piece, -1, 0.0, 0.0, given=True)
            frame += piece.shape[1]

    for i in range(num_chunks):
        x = noise.draw((k, *latent_shape), device, dtype)
        x0 = x
        for s in range(exit_steps[i] + 1):
            t = timesteps_like(x, steps[s])
            with torch.set_grad_enabled(grad_chunks[i] and s == exit_steps[i]):
                flow = model(x, t, text, kv_cache=cache, start_frame=frame)
                x0 = schedule.x0_from_flow(x, flow, t)
            if s < exit_steps[i]:
                eps = noise.draw((k, *latent_shape), device, dtype)
                x = schedule.add_noise(x0, eps, timesteps_like(x, steps[s + 1]))
        t_to = steps[exit_steps[i] + 1] if exit_steps[i] + 1 < len(steps) else 0.0
        write_context(model, x0, text, cache, frame, config.context_noise, noise, schedule)
        yield ChunkOutput(i, frame, x0, exit_steps[i], float(steps[exit_steps[i]]), float(t_to))
        frame = frame + k if isinstance(frame, int) else [f + k for f in frame]

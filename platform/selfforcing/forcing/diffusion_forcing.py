"""Diffusion Forcing (SPEC §5 baselines): chunks noised independently, one block-causal pass.

Two uses: the DF training objective (per-frame flow matching where every chunk is a target and its
context is the other chunks at their own random noise levels), and the CausVid generator sample (the
generator denoises ground-truth latents noised per chunk to a random few-step timestep; DMD then scores
its x0 prediction). Both differ from Self Forcing in that the context is noised data, not own outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule
from ..objectives.denoising import flow_matching_loss
from .self_forcing import GeneratedSample


def per_chunk_timesteps(
    batch: int, frames: int, frames_per_chunk: int, schedule: FlowMatchSchedule, generator: torch.Generator,
    min_t: float = 20.0, max_t: float = 980.0,
) -> torch.Tensor:
    """Independent shifted-uniform t per (sample, chunk), repeated over the chunk's frames -> [B, F]."""
    if frames % frames_per_chunk:
        raise ValueError(f"frames={frames} must be a multiple of frames_per_chunk={frames_per_chunk}")
    t = schedule.sample_timesteps((batch, frames // frames_per_chunk), generator, min_t=min_t, max_t=max_t)
    return t.repeat_interleave(frames_per_chunk, dim=1)


def diffusion_forcing_loss(
    model: nn.Module,
    x0: torch.Tensor,
    text: torch.Tensor,
    schedule: FlowMatchSchedule,
    frames_per_chunk: int,
    generator: torch.Generator,
    window_frames: int | None = None,
    sink_frames: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Flow-matching loss on all frames of x0 [B, F, C, h, w], each chunk at its own noise level."""
    b, f = x0.shape[:2]
    t = per_chunk_timesteps(b, f, frames_per_chunk, schedule, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(x0.device, x0.dtype)
    loss = flow_matching_loss(
        model, x0, text, t, noise, schedule,
        frames_per_chunk=frames_per_chunk, window_frames=window_frames, sink_frames=sink_frames,
    )
    return loss, {"df_loss": float(loss.detach())}


def diffusion_forcing_sample(
    model: nn.Module,
    clean: torch.Tensor,
    text: torch.Tensor,
    timesteps: list[float],
    schedule: FlowMatchSchedule,
    frames_per_chunk: int,
    generator: torch.Generator | Sequence[torch.Generator],
    window_frames: int | None = None,
    sink_frames: int = 0,
) -> GeneratedSample:
    """CausVid's generator sample: clean [B, F, C, h, w] noised per chunk to a random denoising step.

    ``generator`` is one generator for the batch, or one per sample (then sample b's draws depend only on
    its own generator, so splitting a batch changes nothing). Returns the generator's x0 prediction (with
    grad where enabled) and, per frame, the timestep it denoised from (``t_to`` is the next step, or 0).
    """
    b, f = clean.shape[:2]
    k = frames_per_chunk
    if f % k:
        raise ValueError(f"frames={f} must be a multiple of frames_per_chunk={k}")
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if len(gens) not in (1, b):
        raise ValueError(f"{len(gens)} generators for a batch of {b}")
    rows = b if len(gens) == 1 else 1
    idx_parts, noise_parts = [], []
    for g in gens:
        idx_parts.append(torch.randint(len(timesteps), (rows, f // k), generator=g).repeat_interleave(k, dim=1))
        noise_parts.append(torch.randn((rows, *clean.shape[1:]), generator=g, dtype=torch.float64))
    idx = torch.cat(idx_parts)
    noise = torch.cat(noise_parts).to(clean.device, clean.dtype)
    steps = torch.tensor(list(timesteps) + [0.0], dtype=torch.float32)
    t = steps[idx].to(clean.device)
    x_t = schedule.add_noise(clean, noise, t)
    flow = model(x_t, t, text, frames_per_chunk=k, window_frames=window_frames, sink_frames=sink_frames)
    x0 = schedule.x0_from_flow(x_t, flow, t)
    mask = torch.ones((b, f), dtype=torch.bool, device=clean.device)
    # The loss metadata is per frame; report the batch's range (the losses use it only as a range).
    return GeneratedSample(x0, mask, steps[idx].amax(0), steps[idx + 1].amin(0), idx[0, ::k].tolist())

"""Samplers over a ``denoise(x_t, t) -> flow`` function: few-step (generator) and Euler with CFG (teacher)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .schedule import FlowMatchSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def timesteps_like(x: torch.Tensor, t: float) -> torch.Tensor:
    """A per-frame timestep tensor [B, F] filled with ``t`` for latents [B, F, C, H, W]."""
    return torch.full(x.shape[:2], float(t), device=x.device, dtype=torch.float32)


def few_step_sample(
    denoise: Denoiser,
    noise: torch.Tensor,
    timesteps: Sequence[float],
    schedule: FlowMatchSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The few-step generator loop: predict x0 at t_k, re-noise to t_{k+1} with fresh noise; return x0."""
    x = noise
    x0 = noise
    for k, t in enumerate(timesteps):
        tt = timesteps_like(x, t)
        x0 = schedule.x0_from_flow(x, denoise(x, tt), tt)
        if k + 1 < len(timesteps):
            fresh = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = schedule.add_noise(x0, fresh, timesteps_like(x, timesteps[k + 1]))
    return x0


def cfg_flow(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + g (cond - uncond)."""
    return uncond + guidance_scale * (cond - uncond)


@dataclass
class EulerResult:
    sample: torch.Tensor
    # (timestep, state x_t) at every step, starting with the noise at t = T; for ODE pairs.
    trajectory: list[tuple[float, torch.Tensor]]


def euler_sample(
    denoise: Denoiser,
    noise: torch.Tensor,
    num_steps: int,
    schedule: FlowMatchSchedule,
    shift: float | None = None,
    uncond_denoise: Denoiser | None = None,
    guidance_scale: float = 1.0,
    record_trajectory: bool = False,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> EulerResult:
    """N-step Euler ODE sampler with optional classifier-free guidance (teacher sampling, ODE pairs).

    ``eta`` > 0 makes the steps stochastic (DDIM's eta, for flow matching): from the step's x0 and the noise
    it implies, eps = (x - (1 - s) x0) / s, the next state is (1 - s') x0 + s' (sqrt(1 - eta^2) eps + eta z)
    with fresh z ~ N(0, I) from ``generator``. eta = 0 is the Euler ODE step (deterministic: ODE pairs need
    it); eta = 1 is the few-step generator's "predict x0, re-noise" loop. Fresh noise lets frames that a
    teacher committed to at high noise, where it is weakest, be re-decided later (docs/results/toyworld.md).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta} must be in [0, 1] (0 = Euler ODE, 1 = re-noise with fresh noise)")
    sigmas = schedule.sampling_sigmas(num_steps, shift)
    x = noise
    trajectory: list[tuple[float, torch.Tensor]] = []
    for i in range(num_steps):
        t = schedule.timestep(sigmas[i])
        if record_trajectory:
            trajectory.append((t, x.clone()))
        tt = timesteps_like(x, t)
        flow = denoise(x, tt)
        if uncond_denoise is not None and guidance_scale != 1.0:
            flow = cfg_flow(flow, uncond_denoise(x, tt), guidance_scale)
        if eta > 0.0 and sigmas[i + 1] > 0.0:
            x = _stochastic_step(x, flow, sigmas[i], sigmas[i + 1], eta, generator)
        else:
            ct = torch.promote_types(x.dtype, torch.float32)
            x = (x.to(ct) + (sigmas[i + 1] - sigmas[i]) * flow.to(ct)).to(x.dtype)
    if record_trajectory:
        trajectory.append((0.0, x.clone()))
    return EulerResult(sample=x, trajectory=trajectory)


def _stochastic_step(
    x: torch.Tensor, flow: torch.Tensor, s: float, s_next: float, eta: float, generator: torch.Generator | None
) -> torch.Tensor:
    """From sigma s to s_next keeping a 1 - eta^2 share of the implied noise's variance, the rest fresh."""
    ct = torch.promote_types(x.dtype, torch.float32)
    x0 = x.to(ct) - s * flow.to(ct)
    eps = (x.to(ct) - (1 - s) * x0) / s
    fresh = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype).to(ct)
    return ((1 - s_next) * x0 + s_next * (math.sqrt(1 - eta**2) * eps + eta * fresh)).to(x.dtype)

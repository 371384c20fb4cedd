"""ODE initialisation data (SPEC §5): teacher ODE trajectories recorded at the generator's steps.

The teacher (bidirectional, with CFG against the negative prompt) integrates noise -> sample with the
N-step Euler sampler. We do not interpolate: the Euler grid sigma_i = shift(1 - i/N) must contain every
denoising timestep exactly, and ``ode_grid_indices`` says where (or fails with the N that would work).
For the release's steps [1000, 750, 500, 250] warped with shift s, a teacher grid with the same shift s
and N a multiple of 4 (e.g. 48) holds them at i = 0, N/4, N/2, 3N/4.
The student's regression loss is ``objectives.ode_regression.ode_regression_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion.samplers import euler_sample
from ..diffusion.schedule import FlowMatchSchedule
from .rollout import NoiseSource


@dataclass
class ODEPairs:
    """states [B, K, F, C, h, w]: the ODE state at each of the K ``timesteps``; target [B, F, C, h, w]."""

    states: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


def ode_grid_indices(
    timesteps: Sequence[float], num_steps: int, schedule: FlowMatchSchedule, shift: float | None = None,
    tol: float = 1e-6,
) -> list[int]:
    """Index on the N-step Euler grid of each (already warped) timestep; error if one is off the grid."""
    s = schedule.shift if shift is None else shift
    indices = []
    for t in timesteps:
        sigma = float(t) / schedule.num_train_timesteps
        u = sigma / (s - (s - 1) * sigma)  # inverse of the shift
        pos = num_steps * (1 - u)
        if abs(pos - round(pos)) > tol * max(1, num_steps) or not 0 <= round(pos) < num_steps:
            raise ValueError(
                f"timestep {t} is not on the {num_steps}-step Euler grid with shift {s} (position {pos:.4f}); "
                "use the schedule's shift for the teacher and a step count that is a multiple of the "
                "denoising step spacing (e.g. 48 for [1000, 750, 500, 250])"
            )
        indices.append(round(pos))
    return indices


@torch.no_grad()
def generate_ode_pairs(
    teacher: nn.Module,
    text: torch.Tensor,
    latent_shape: tuple[int, int, int, int],
    seeds: Sequence[int],
    schedule: FlowMatchSchedule,
    timesteps: Sequence[float],
    num_steps: int = 48,
    shift: float | None = None,
    negative_text: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> ODEPairs:
    """Teacher trajectories for prompts text [B, L, D] from per-sample seeded noise of ``latent_shape``
    (F, C, h, w); deterministic for the seeds. ``timesteps`` are the generator's (warped) steps."""
    indices = ode_grid_indices(timesteps, num_steps, schedule, shift)
    p = next(teacher.parameters())
    noise = NoiseSource(seeds).draw(latent_shape, p.device, p.dtype)

    def cond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return teacher(x, t, text)

    def uncond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return teacher(x, t, negative_text)

    result = euler_sample(
        cond, noise, num_steps, schedule, shift=shift,
        uncond_denoise=None if negative_text is None else uncond, guidance_scale=guidance_scale,
        record_trajectory=True,
    )
    states = torch.stack([result.trajectory[i][1] for i in indices], dim=1)
    grid_t = torch.tensor([result.trajectory[i][0] for i in indices], dtype=torch.float32)
    return ODEPairs(states=states, timesteps=grid_t, target=result.sample)

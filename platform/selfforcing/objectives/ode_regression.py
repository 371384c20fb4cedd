"""ODE-initialisation regression (SPEC §5): the causal student maps teacher ODE states to the endpoint.

For each (sample, chunk) one recorded state index k is drawn (independently per chunk, as the release's
``uniform_timestep=False``; or shared by all chunks of a sample), so a chunk may sit at a different noise
level than its context. The student runs block-causally over the whole sequence with per-frame timesteps
and its x0 prediction is regressed onto the ODE endpoint with an MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule


def draw_state_indices(
    batch: int, num_chunks: int, num_states: int, generator: torch.Generator, shared: bool = False
) -> torch.Tensor:
    """State index per (sample, chunk) -> [B, num_chunks] (all chunks equal when ``shared``)."""
    cols = 1 if shared else num_chunks
    idx = torch.randint(num_states, (batch, cols), generator=generator)
    return idx.expand(batch, num_chunks)


def ode_regression_loss(
    student: nn.Module,
    states: torch.Tensor,
    timesteps: torch.Tensor,
    target: torch.Tensor,
    text: torch.Tensor,
    schedule: FlowMatchSchedule,
    frames_per_chunk: int,
    generator: torch.Generator | None,
    shared_across_chunks: bool = False,
    window_frames: int | None = None,
    sink_frames: int = 0,
    state_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE(x0_student(states[k], t_k), target) under the block-causal mask.

    states [B, K, F, C, h, w] are the ODE states at timesteps [K]; target [B, F, C, h, w] the endpoint.
    ``state_indices`` [B, F / frames_per_chunk] gives each (sample, chunk)'s state (distributed training
    draws them per sample); by default they are drawn from ``generator``.
    """
    b, num_states, frames = states.shape[:3]
    k = frames_per_chunk
    if frames % k:
        raise ValueError(f"{frames} frames is not a multiple of frames_per_chunk={k}")
    if state_indices is None:
        if generator is None:
            raise ValueError("ode_regression_loss needs a generator or state_indices")
        idx = draw_state_indices(b, frames // k, num_states, generator, shared_across_chunks)
    elif tuple(state_indices.shape) != (b, frames // k):
        raise ValueError(f"state_indices of shape {tuple(state_indices.shape)}; expected {(b, frames // k)}")
    else:
        idx = state_indices
    idx = idx.repeat_interleave(k, dim=1).to(states.device)  # [B, F]
    x_t = torch.gather(states, 1, idx[:, None, :, None, None, None].expand(-1, 1, -1, *states.shape[3:]))[:, 0]
    t = timesteps.to(states.device, torch.float32)[idx]
    flow = student(x_t, t, text, frames_per_chunk=k, window_frames=window_frames, sink_frames=sink_frames)
    x0 = schedule.x0_from_flow(x_t, flow, t)
    loss = F.mse_loss(x0.float(), target.float())
    return loss, {"ode_loss": float(loss.detach()), "ode_t_mean": float(t.mean())}

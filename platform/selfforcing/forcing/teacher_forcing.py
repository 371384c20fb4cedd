"""Teacher Forcing (SPEC §5 baseline): denoise a chunk given the clean ground-truth context.

The block-causal attention of one sequence cannot give every chunk a clean context and a noisy self at
once (a chunk would then also be the noisy context of the next). So for each sample one target chunk j is
drawn: chunks before j are clean at t = 0 (exactly how the inference cache sees context), chunk j is
noised to a random t, and the per-frame flow-matching loss covers chunk j only. Later chunks cannot
influence chunk j under the block-causal mask; they are left clean and excluded from the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule
from ..objectives.denoising import flow_matching_loss


def teacher_forcing_inputs(
    batch: int, frames: int, frames_per_chunk: int, schedule: FlowMatchSchedule, generator: torch.Generator,
    min_t: float = 20.0, max_t: float = 980.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-frame timesteps [B, F] with the target chunk at t and all other frames at 0, target mask [B, F])."""
    k = frames_per_chunk
    if frames % k:
        raise ValueError(f"frames={frames} must be a multiple of frames_per_chunk={k}")
    target = torch.randint(frames // k, (batch,), generator=generator)
    t = schedule.sample_timesteps((batch,), generator, min_t=min_t, max_t=max_t)
    chunk_of_frame = torch.arange(frames) // k
    mask = chunk_of_frame[None, :] == target[:, None]
    return torch.where(mask, t[:, None], torch.zeros(())), mask


def teacher_forcing_loss(
    model: nn.Module,
    x0: torch.Tensor,
    text: torch.Tensor,
    schedule: FlowMatchSchedule,
    frames_per_chunk: int,
    generator: torch.Generator,
    window_frames: int | None = None,
    sink_frames: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Flow-matching loss of one target chunk per sample of x0 [B, F, C, h, w] with clean context."""
    b, f = x0.shape[:2]
    t, mask = teacher_forcing_inputs(b, f, frames_per_chunk, schedule, generator)
    t, mask = t.to(x0.device), mask.to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(x0.device, x0.dtype)
    # Context frames have t = 0, so add_noise leaves them exactly clean.
    loss = flow_matching_loss(
        model, x0, text, t, noise, schedule, frame_mask=mask,
        frames_per_chunk=frames_per_chunk, window_frames=window_frames, sink_frames=sink_frames,
    )
    return loss, {"tf_loss": float(loss.detach())}

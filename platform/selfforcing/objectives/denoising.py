"""The flow-matching denoising loss: the critic's (fake score's) objective and the TF / DF baselines'."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule


def flow_matching_loss(
    model: nn.Module,
    x0: torch.Tensor,
    text: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: FlowMatchSchedule,
    frame_mask: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """mean ||v_theta(x_t, t) - (eps - x0)||^2 over frames in ``frame_mask`` [B, F] (None = all).

    x0, noise [B, F, C, h, w]; t [B, F] per-frame raw timesteps (frames may sit at different levels);
    ``model_kwargs`` select the attention pattern (e.g. ``frames_per_chunk`` for block-causal).
    """
    x_t = schedule.add_noise(x0, noise, t)
    flow = model(x_t, t, text, **model_kwargs)
    err = (flow.float() - schedule.flow_target(x0, noise).float()).pow(2)
    if frame_mask is None:
        return err.mean()
    w = frame_mask.to(err.dtype)[:, :, None, None, None].expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1)

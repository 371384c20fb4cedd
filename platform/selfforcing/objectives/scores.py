"""x0 predictions of the scoring networks (bidirectional Wan DiTs predicting flow)."""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule


def x0_prediction(
    model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, schedule: FlowMatchSchedule
) -> torch.Tensor:
    """x0 = x_t - sigma v for x_t [B, F, C, h, w] at t [B, F]; bidirectional (the scores see the whole video)."""
    return schedule.x0_from_flow(x_t, model(x_t, t, text), t)


def guided_x0(
    model: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    negative_text: torch.Tensor | None,
    guidance_scale: float,
    schedule: FlowMatchSchedule,
) -> torch.Tensor:
    """Real score with CFG in the release's form: c + g (c - u), u from the negative prompt.

    (g = 3 is "CFG 4" in the usual u + w (c - u) form.) Without a negative prompt or with g = 0 it is
    the conditional prediction. The conditional and unconditional passes run as one call on a batch of
    2B (one pass over the teacher's weights instead of two: under ZeRO-3 that halves the gathers).
    """
    if negative_text is None or guidance_scale == 0:
        return x0_prediction(model, x_t, t, text, schedule)
    both = x0_prediction(
        model, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, negative_text.to(text)]), schedule
    )
    cond, uncond = both.chunk(2)
    return cond + guidance_scale * (cond - uncond)

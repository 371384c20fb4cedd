"""The supervised loop every toy-world stage shares: step, clip, progress, wall-time budget."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .progress import Progress


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    max_minutes: float | None,
    progress: Progress,
    step_loss: Callable[[int], torch.Tensor],
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int], None] | None = None,
    window: int = 20,
) -> tuple[int, float]:
    """Minimise ``step_loss(step)`` for up to ``steps`` steps or ``max_minutes``, clipping at norm 1.

    The wall-time cap is what keeps the recipe's stated times on a loaded machine (fewer steps happen
    instead). Returns (steps done, mean loss of the last ``window`` steps).
    """
    deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
    losses: list[float] = []
    step = 0
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if after_step is not None:
            after_step(step)
        losses.append(float(loss.detach()))
        progress.update(step, loss=float(np.mean(losses[-window:])), lr=opt.param_groups[0]["lr"])
        if deadline is not None and time.perf_counter() > deadline:
            progress.note(f"time budget reached after {step + 1} steps")
            break
    return step + 1, float(np.mean(losses[-window:]))

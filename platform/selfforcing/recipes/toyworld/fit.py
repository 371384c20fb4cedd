"""The supervised loop every toy-world stage shares: exactly ``steps`` optimiser steps, clipped at norm 1.

Budgets are step counts, never wall time: the same command trains the same steps (and gives the same
numbers) on a quiet or a busy machine; a slower machine only takes longer. ``WallClockGuard`` is the one
place where time may matter, and it can only abort a stage with an error, never shorten it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .progress import Progress


class StageTimeout(RuntimeError):
    """A stage ran past its ``abort_after_minutes`` limit; nothing of it was saved."""


class WallClockGuard:
    """Raises ``StageTimeout`` naming the stage once ``minutes`` have passed (None: never), or earlier, once
    ``project_after`` steps show that the whole budget would take longer than that (no time is then spent
    on a stage that cannot finish, e.g. on a GPU slot).

    Budgets stay step counts; this only protects a machine from a stage that would run for hours (a wrong
    device, a pathological load). A stage that is aborted leaves no finished marker, so no later run can
    mistake its partial weights for the stage's result.
    """

    def __init__(self, stage: str, minutes: float | None, project_after: int | None = None) -> None:
        self.stage, self.minutes, self.project_after = stage, minutes, project_after
        self.start = time.perf_counter()

    def check(self, steps_done: int, steps: int) -> None:
        if self.minutes is None:
            return
        elapsed = time.perf_counter() - self.start
        limit = 60 * self.minutes
        if elapsed > limit:
            why = f"ran past its wall-time limit abort_after_minutes={self.minutes} after {steps_done} of {steps} steps"
        elif self.project_after is not None and steps_done == self.project_after < steps and (
            elapsed / steps_done * steps > limit
        ):
            why = (f"would need ~{elapsed / steps_done * steps / 60:.1f} min for {steps} steps at the rate of its "
                   f"first {steps_done} ({steps_done / elapsed:.2f} steps/s), more than abort_after_minutes="
                   f"{self.minutes}")
        else:
            return
        raise StageTimeout(
            f"stage {self.stage!r} {why}, and was aborted (nothing saved). Budgets are step counts, so a "
            "slower machine must take longer, not train less: raise the limit or set it to null"
        )


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    progress: Progress,
    step_loss: Callable[[int], torch.Tensor],
    guard: WallClockGuard | None = None,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int], None] | None = None,
    window: int = 20,
) -> float:
    """Minimise ``step_loss(step)`` for exactly ``steps`` steps; returns the mean loss of the last ``window``.

    ``guard`` (optional) aborts with ``StageTimeout`` instead of stopping early.
    """
    if steps <= 0:
        raise ValueError(f"steps={steps} must be > 0")
    losses: list[float] = []
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
        if guard is not None:
            guard.check(step + 1, steps)
    return float(np.mean(losses[-window:]))

"""The toy world's one use of wall time: a guard that can abort a stage, never shorten it.

Budgets are step counts, never wall time: every stage runs the platform's training loop
(``training.single_process``) for exactly its steps, and the same command trains the same steps (and gives
the same numbers) on a quiet or a busy machine; a slower machine only takes longer. ``WallClockGuard`` is
called by the loop after every step and can only abort a stage with ``StageTimeout``.
"""

from __future__ import annotations

import time


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

    def __call__(self, steps_done: int, steps: int) -> None:
        self.check(steps_done, steps)

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

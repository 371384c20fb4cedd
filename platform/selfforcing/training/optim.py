"""AdamW with the release's settings and a guarded step: clip, and skip (and count) non-finite steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .config import OptimConfig


def build_adamw(params: Iterable[nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        list(params), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay, eps=config.eps
    )


@dataclass
class StepOutcome:
    """Whether the optimiser stepped, the pre-clip gradient norm, and why a step was skipped."""

    applied: bool
    grad_norm: float
    reason: str = ""


class RoleOptimizer(Protocol):
    """What a role needs from its optimiser; injected, so one role runs with plain AdamW in one process
    (``GuardedOptimizer``) or with a DeepSpeed ZeRO engine on Ray
    (``training.distributed.DeepSpeedOptimizer``).

    A step is ``zero_grad`` -> ``backward(loss)`` (once per micro-batch) -> ``step(loss)``. A non-finite
    loss or gradient skips the step (weights and optimiser state untouched) and is counted in ``skipped``.
    """

    skipped: int
    applied: int
    accumulation_steps: int  # backward calls per step; the step applies their mean

    def zero_grad(self) -> None: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self, loss: torch.Tensor | float | None = None) -> StepOutcome: ...

    def full_parameters(self) -> contextlib.AbstractContextManager: ...

    def set_lr(self, lr: float) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class GuardedOptimizer:
    """One role's optimiser. A step whose loss or gradients are non-finite is skipped (gradients are
    dropped, weights and optimiser state untouched) and counted in ``skipped``, so one bad batch cannot
    poison the weights of a long run."""

    def __init__(self, params: Iterable[nn.Parameter], config: OptimConfig, accumulation_steps: int = 1) -> None:
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps={accumulation_steps} must be >= 1")
        self.accumulation_steps = accumulation_steps
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("GuardedOptimizer got no trainable parameters")
        self.config = config
        self.optimizer = build_adamw(self.params, config)
        self.skipped = 0
        self.applied = 0

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate d(loss)/d(params) / accumulation_steps (so a step applies the mean over its
        micro-batches); a non-finite loss is not back-propagated (``step`` skips it)."""
        if bool(torch.isfinite(loss.detach()).all()):
            (loss / self.accumulation_steps if self.accumulation_steps > 1 else loss).backward()

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Parameters are whole in one process: nothing to gather."""
        yield

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (schedules set it from the step number)."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def step(self, loss: torch.Tensor | float | None = None) -> StepOutcome:
        """Clip and step on the gradients accumulated since ``zero_grad``, unless something is non-finite."""
        if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
            return self._skip("non-finite loss")
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return self._skip("no gradient")
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        if not torch.isfinite(norm):
            return self._skip("non-finite gradient")
        self.optimizer.step()
        self.zero_grad()
        self.applied += 1
        return StepOutcome(True, float(norm))

    def _skip(self, reason: str) -> StepOutcome:
        self.zero_grad()
        self.skipped += 1
        return StepOutcome(False, float("nan"), reason)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "skipped": self.skipped, "applied": self.applied}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.skipped, self.applied = state["skipped"], state["applied"]

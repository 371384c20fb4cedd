"""Exponential moving average of the generator (the weights that are served), as in the release: created
as a copy of the generator at ``start_step`` and updated after every generator step from then on."""

from __future__ import annotations

import torch
from torch import nn

from .config import EMAConfig


class EMA:
    """Shadow copies of a model's floating-point parameters: ema = decay * ema + (1 - decay) * param."""

    def __init__(self, config: EMAConfig) -> None:
        self.decay = config.decay
        self.start_step = config.start_step
        self.shadow: dict[str, torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.shadow is not None

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after a generator step taken at training step ``step``."""
        if step < self.start_step:
            return
        params = dict(model.named_parameters())
        if self.shadow is None:
            self.shadow = {n: p.detach().clone() for n, p in params.items()}
            return
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the EMA weights into ``model`` (e.g. a copy used for evaluation or export)."""
        if self.shadow is None:
            raise RuntimeError(f"the EMA starts at step {self.start_step} and has not been created yet")
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = state["shadow"]

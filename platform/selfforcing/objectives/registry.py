"""Objectives by name. A factory takes the scoring networks, the schedule, the training config and a
generator for draws, and returns a ``Scorer``; roles build theirs from ``TrainingConfig.objective``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .base import Scorer


@dataclass
class ScoreNetworks:
    """The networks an objective may use: frozen teacher, trained critic, discriminator."""

    real_score: nn.Module | None = None
    fake_score: nn.Module | None = None
    discriminator: nn.Module | None = None

    def require(self, name: str, objective: str) -> nn.Module:
        net = getattr(self, name)
        if net is None:
            raise ValueError(f"objective {objective!r} needs a {name} network")
        return net


ObjectiveFactory = Callable[..., Scorer]
OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    def wrap(factory: ObjectiveFactory) -> ObjectiveFactory:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        OBJECTIVES[name] = factory
        return factory

    return wrap


def objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def build_objective(name: str, networks: ScoreNetworks, schedule, config: Any, generator=None) -> Scorer:
    """Scorer ``name`` over ``networks``; ``config`` is the objective's own config section."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid: {objective_names()}")
    return OBJECTIVES[name](networks, schedule, config, generator)

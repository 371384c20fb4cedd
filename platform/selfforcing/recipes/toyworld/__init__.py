"""The toy-world recipe: the whole Self Forcing pipeline on a CPU in minutes (``run_toyworld``).

Stages: teacher (bidirectional, flow matching; shipped in the package, or trained and cached) -> ODE pairs ->
ODE initialisation of the block-causal student -> Self Forcing (DMD; SiD / GAN selectable) -> evaluation at
the training length and extrapolated with a rolling KV cache. ``selfforcing toyworld run --out DIR`` is the
command; ``python -m selfforcing.recipes.toyworld.teacher_gpu`` trains the teacher on a GPU.

The pipeline's names are loaded on first use, so the teacher's modules (``teacher``, ``evaluate``,
``release``) import without the packages only the students and the reports need (PyAV for MP4s).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import (
    BaselineBudget,
    EvalBudget,
    ODEInitBudget,
    RecipeConfig,
    SelfForcingBudget,
    TeacherBudget,
    config_key,
)

_LAZY = {"ToyWorldRun": "pipeline", "default_cache_dir": "pipeline", "run_toyworld": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BaselineBudget",
    "EvalBudget",
    "ODEInitBudget",
    "RecipeConfig",
    "SelfForcingBudget",
    "TeacherBudget",
    "ToyWorldRun",
    "config_key",
    "default_cache_dir",
    "run_toyworld",
]

"""The toy-world recipe: the whole Self Forcing pipeline on a CPU in minutes (``run_toyworld``).

Stages: teacher (bidirectional, flow matching, cached by config) -> ODE pairs -> ODE initialisation of the
block-causal student -> Self Forcing (DMD; SiD / GAN selectable) -> evaluation at the training length and
extrapolated with a rolling KV cache. ``selfforcing toyworld run --out DIR`` is the command.
"""

from .config import EvalBudget, ODEInitBudget, RecipeConfig, SelfForcingBudget, TeacherBudget, config_key
from .pipeline import ToyWorldRun, default_cache_dir, run_toyworld

__all__ = [
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

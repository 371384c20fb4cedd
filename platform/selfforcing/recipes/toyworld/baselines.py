"""Data-trained causal baselines of the ablation (SPEC §5): Teacher Forcing and Diffusion Forcing.

Both start from the teacher's weights (as the ODE-initialised student does) and train the block-causal
model by flow matching on fresh renderer videos: Teacher Forcing denoises one chunk given the clean
ground-truth context, Diffusion Forcing noises every chunk independently. At test time they run the
same 4-step KV-cached rollout as the students, so they face the exposure bias Self Forcing removes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from selfforcing.config import PlatformConfig
from selfforcing.models.wan_dit import WanDiT

from .config import BaselineBudget
from .jobs import baseline_job, run_stage, save_input

KINDS = ("teacher_forcing", "diffusion_forcing")

# Part of the baselines' cache keys: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps (v1 could stop at a wall-time cap). v3: the platform's teacher job with
# ``training.loss`` teacher_forcing / diffusion_forcing (per-sample draws of (seed, step, index)).
CODE_VERSION = 3
BaselineKind = Literal["teacher_forcing", "diffusion_forcing"]


def train_baseline(
    teacher: WanDiT, config: PlatformConfig, kind: BaselineKind, budget: BaselineBudget, run_dir: str | Path,
    quiet: bool = False,
) -> tuple[WanDiT, dict[str, float]]:
    """A copy of the teacher trained block-causally with the ``kind`` baseline's loss for exactly
    ``budget.steps`` steps; returns (model, stats)."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline kind={kind!r}; valid kinds are {sorted(KINDS)}")
    run_dir = Path(run_dir)
    job = baseline_job(config, kind, budget, run_dir, save_input(teacher, config, run_dir / "inputs" / "teacher"))
    return run_stage(job, config, kind, quiet, budget.abort_after_minutes)

"""The toy world's stages as the platform's training jobs, run in this process.

Every stage that trains (teacher, ODE initialisation, Self Forcing / CausVid, the Teacher / Diffusion Forcing
baselines) is a typed job config (``TeacherJobConfig``, ``ODEInitJobConfig``, ``SelfForcingJobConfig``)
built from the recipe's budget, and runs on the platform's one training loop through
``training.single_process.run_single_process``: the same step programs, guarded AdamW, EMA, checkpoints
and metrics as the Ray jobs (``jobs/*.py``, ``jobs/configs/toy_*.yaml``), without a cluster. A stage's run
folder holds its checkpoints, so an interrupted stage continues where it stopped. Input networks are handed
over as ``save_generator`` directories, as the jobs hand them over through the registry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from selfforcing.config import PlatformConfig
from selfforcing.models.factory import load_dit, save_generator
from selfforcing.models.wan_dit import WanDiT
from selfforcing.training.config import EMAConfig, OptimConfig, TrainingConfig
from selfforcing.training.job_config import SelfForcingJobConfig, TrainingJobBase
from selfforcing.training.loop import METRICS_FILE, read_history
from selfforcing.training.supervised_config import LRSchedule, ODEInitJobConfig, TeacherJobConfig

from .config import BaselineBudget, ODEInitBudget, SelfForcingBudget, TeacherBudget
from .guard import WallClockGuard

LOSS_KEYS = ("fm_loss", "tf_loss", "df_loss", "ode_loss", "dmd_loss", "sid_loss", "gan_g_loss")


def _common(config: PlatformConfig, run_dir: Path, name: str, steps: int, checkpoint_every: int = 0
            ) -> dict[str, Any]:
    """The sections every toy stage's job shares: one process, no tracking, progress ~20 times a stage.
    The run is ``run_dir/<name>`` (the name prefixes its progress lines)."""
    return {
        "platform": config.model_dump(mode="json"),
        "run": {"name": name, "storage_path": str(run_dir)},
        "tracking": {"register_as": None},
        "scaling": {"num_workers": 1, "gradient_accumulation_steps": 1},
        "checkpoint": {"every_n_steps": checkpoint_every, "num_to_keep": 1},
        "logging": {"every_n_steps": max(1, steps // 20), "sample_video": False},
    }


def _adamw(lr: float, weight_decay: float = 0.01) -> dict[str, Any]:
    """torch's AdamW defaults (betas 0.9 / 0.999), clipped at norm 1: the toy recipe's supervised stages."""
    return OptimConfig(lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, max_grad_norm=1.0).model_dump()


def teacher_schedule(budget: TeacherBudget) -> LRSchedule:
    """Linear warm-up, then a cosine to ``min_lr_fraction`` at the budget's last step."""
    return LRSchedule(kind="cosine", warmup_steps=budget.warmup_steps, min_lr_fraction=budget.min_lr_fraction)


def teacher_job(config: PlatformConfig, budget: TeacherBudget, run_dir: Path) -> TeacherJobConfig:
    """The bidirectional teacher: flow matching on fresh renderer videos (``jobs/configs/toy_teacher.yaml``)."""
    return TeacherJobConfig.model_validate({
        **_common(config, run_dir, "teacher", budget.steps, checkpoint_every=500),
        "training": {
            "loss": "flow_matching", "optim": _adamw(budget.lr, budget.weight_decay),
            "lr_schedule": teacher_schedule(budget).model_dump(),
            "ema": EMAConfig(decay=budget.ema_decay, start_step=0).model_dump(),
            "caption_dropout": budget.caption_dropout, "batch_size": budget.batch_size, "max_steps": budget.steps,
            "seed": budget.seed,
        },
        "models": {"init": f"random:{budget.seed}"},
        "data": {"source": "toyworld", "seed": budget.seed},
    })


def baseline_job(config: PlatformConfig, kind: str, budget: BaselineBudget, run_dir: Path, teacher: Path
                 ) -> TeacherJobConfig:
    """A block-causal Teacher / Diffusion Forcing student from the teacher's weights, on renderer videos."""
    return TeacherJobConfig.model_validate({
        **_common(config, run_dir, kind, budget.steps),
        "training": {"loss": kind, "optim": _adamw(budget.lr), "ema": None, "caption_dropout": 0.0,
                     "batch_size": budget.batch_size, "max_steps": budget.steps, "seed": budget.seed},
        "models": {"init": str(teacher)},
        "data": {"source": "toyworld", "seed": budget.seed},
    })


def ode_init_job(config: PlatformConfig, budget: ODEInitBudget, run_dir: Path, teacher: Path, pairs: Path
                 ) -> ODEInitJobConfig:
    """The causal student from the teacher's weights, regressed onto its trajectories (``toy_ode_init.yaml``)."""
    return ODEInitJobConfig.model_validate({
        **_common(config, run_dir, "ode_init", budget.steps),
        "training": {"optim": _adamw(budget.lr), "ema": None, "batch_size": budget.batch_size,
                     "max_steps": budget.steps, "seed": budget.seed},
        "models": {"init": str(teacher)},
        "data": {"path": str(pairs), "seed": budget.seed},
    })


def self_forcing_job(
    config: PlatformConfig, training: TrainingConfig, budget: SelfForcingBudget, run_dir: Path, student: Path,
    teacher: Path,
) -> SelfForcingJobConfig:
    """Self Forcing (or CausVid) of the student against the teacher on toy-world captions (``toy_dmd.yaml``)."""
    return SelfForcingJobConfig.model_validate({
        **_common(config, run_dir, budget.rollout, budget.steps),
        "training": training.model_dump(),
        "models": {"generator": str(student), "teacher": str(teacher)},
        "data": {"source": "toyworld", "seed": budget.seed},
    })


def save_input(model: nn.Module, config: PlatformConfig, folder: Path) -> Path:
    """A network handed to a job, as the directory ``save_generator`` writes."""
    return save_generator(config, model, folder)


def final_loss(history: list[dict[str, float]], window: int = 20) -> float:
    """Mean of the last ``window`` steps' loss (whichever loss the stage reports)."""
    key = next((k for k in LOSS_KEYS if any(k in h for h in history)), None)  # Self Forcing: generator steps
    values = [h[key] for h in history if key in h][-window:] if key else []
    return float(np.mean(values)) if values else float("nan")


def run_stage(
    job: TrainingJobBase, config: PlatformConfig, stage: str, quiet: bool, abort_after_minutes: float | None,
    window: int = 20, project_after: int | None = None, counters: tuple[str, ...] = (),
) -> tuple[WanDiT, dict[str, float]]:
    """Run ``job`` here for exactly its steps; returns its exported network (the EMA when it keeps one; eval
    mode, frozen) and stats (steps, final loss, seconds, and the run's ``counters``: generator_steps, ...)."""
    from selfforcing.training.single_process import run_single_process

    start = time.perf_counter()
    guard = WallClockGuard(stage, abort_after_minutes, project_after)
    outcome = run_single_process(job, quiet=quiet, on_step=guard)
    model = load_dit(config, outcome.model_dir).eval().requires_grad_(False)
    history = read_history(outcome.output_dir / METRICS_FILE)
    stats = {"steps": outcome.steps, "final_loss": final_loss(history, window),
             "seconds": time.perf_counter() - start}
    stats.update({k: outcome.summary["state"][k] for k in counters})
    return model, stats

"""Data-trained causal baselines of the ablation (SPEC §5): Teacher Forcing and Diffusion Forcing.

Both start from the teacher's weights (as the ODE-initialised student does) and train the block-causal
model by flow matching on fresh renderer videos: Teacher Forcing denoises one chunk given the clean
ground-truth context, Diffusion Forcing noises every chunk independently. At test time they run the
same 4-step KV-cached rollout as the students, so they face the exposure bias Self Forcing removes.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from selfforcing.config import PlatformConfig
from selfforcing.config.schema import StrictModel
from selfforcing.forcing import diffusion_forcing_loss, teacher_forcing_loss
from selfforcing.models.wan_dit import WanDiT

from .fit import fit
from .progress import Progress
from .teacher import schedule_of
from .world import ToyData

LOSSES = {"teacher_forcing": teacher_forcing_loss, "diffusion_forcing": diffusion_forcing_loss}


class BaselineBudget(StrictModel):
    """Flow-matching training of a causal baseline on renderer data."""

    kind: Literal["teacher_forcing", "diffusion_forcing"] = Field(description="which baseline")
    steps: int = Field(2000, gt=0, description="optimiser steps (upper bound; max_minutes usually binds)")
    batch_size: int = Field(32, gt=0, description="videos per step")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    max_minutes: float | None = Field(3.5, gt=0, description="wall-time budget (the students' budget)")
    seed: int = Field(3, description="seed of scenes and draws")


def train_baseline(
    teacher: WanDiT, config: PlatformConfig, budget: BaselineBudget, data: ToyData, quiet: bool = False
) -> tuple[WanDiT, dict[str, float]]:
    """A copy of the teacher trained block-causally with the baseline's loss; returns (model, stats)."""
    model = copy.deepcopy(teacher).train().requires_grad_(True)
    loss_fn = LOSSES[budget.kind]
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.01)
    rng = np.random.default_rng(budget.seed)
    gen = torch.Generator().manual_seed(budget.seed)
    progress = Progress(budget.kind, budget.steps, quiet=quiet)
    schedule = schedule_of(config)

    def step_loss(step: int) -> torch.Tensor:
        batch = data.batch(budget.batch_size, rng)
        return loss_fn(model, batch.latents, batch.text, schedule, config.video.frames_per_chunk, gen)[0]

    steps, final = fit(model, opt, budget.steps, budget.max_minutes, progress, step_loss)
    stats = {"steps": steps, "final_loss": final, "seconds": progress.elapsed}
    return model.eval().requires_grad_(False), stats

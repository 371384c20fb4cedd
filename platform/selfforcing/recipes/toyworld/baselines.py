"""Data-trained causal baselines of the ablation (SPEC §5): Teacher Forcing and Diffusion Forcing.

Both start from the teacher's weights (as the ODE-initialised student does) and train the block-causal
model by flow matching on fresh renderer videos: Teacher Forcing denoises one chunk given the clean
ground-truth context, Diffusion Forcing noises every chunk independently. At test time they run the
same 4-step KV-cached rollout as the students, so they face the exposure bias Self Forcing removes.
"""

from __future__ import annotations

import copy
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from selfforcing.config import PlatformConfig
from selfforcing.config.schema import StrictModel
from selfforcing.forcing import diffusion_forcing_loss, teacher_forcing_loss
from selfforcing.models.wan_dit import WanDiT

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
    deadline = None if budget.max_minutes is None else time.perf_counter() + 60 * budget.max_minutes
    losses: list[float] = []
    step = 0
    for step in range(budget.steps):
        batch = data.batch(budget.batch_size, rng)
        loss, _ = loss_fn(model, batch.latents, batch.text, schedule_of(config), config.video.frames_per_chunk, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(step, loss=float(np.mean(losses[-20:])))
        if deadline is not None and time.perf_counter() > deadline:
            progress.note(f"time budget reached after {step + 1} steps")
            break
    stats = {"steps": step + 1, "final_loss": float(np.mean(losses[-20:])), "seconds": progress.elapsed}
    return model.eval().requires_grad_(False), stats

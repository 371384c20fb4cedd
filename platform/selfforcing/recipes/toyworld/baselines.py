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

from selfforcing.config import PlatformConfig
from selfforcing.forcing import diffusion_forcing_loss, teacher_forcing_loss
from selfforcing.models.wan_dit import WanDiT

from .config import BaselineBudget
from .fit import WallClockGuard, fit
from .progress import Progress
from .teacher import schedule_of
from .world import ToyData

LOSSES = {"teacher_forcing": teacher_forcing_loss, "diffusion_forcing": diffusion_forcing_loss}


# Part of the baselines' cache keys: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps (v1 could stop at a wall-time cap).
CODE_VERSION = 2
BaselineKind = Literal["teacher_forcing", "diffusion_forcing"]


def train_baseline(
    teacher: WanDiT, config: PlatformConfig, kind: BaselineKind, budget: BaselineBudget, data: ToyData,
    quiet: bool = False,
) -> tuple[WanDiT, dict[str, float]]:
    """A copy of the teacher trained block-causally with the ``kind`` baseline's loss for exactly
    ``budget.steps`` steps; returns (model, stats)."""
    if kind not in LOSSES:
        raise ValueError(f"unknown baseline kind={kind!r}; valid kinds are {sorted(LOSSES)}")
    model = copy.deepcopy(teacher).train().requires_grad_(True)
    loss_fn = LOSSES[kind]
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.01)
    rng = np.random.default_rng(budget.seed)
    gen = torch.Generator().manual_seed(budget.seed)
    progress = Progress(kind, budget.steps, quiet=quiet)
    schedule = schedule_of(config)

    def step_loss(step: int) -> torch.Tensor:
        batch = data.batch(budget.batch_size, rng)
        return loss_fn(model, batch.latents, batch.text, schedule, config.video.frames_per_chunk, gen)[0]

    final = fit(model, opt, budget.steps, progress, step_loss, WallClockGuard(kind, budget.abort_after_minutes))
    stats = {"steps": budget.steps, "final_loss": final, "seconds": progress.elapsed}
    return model.eval().requires_grad_(False), stats

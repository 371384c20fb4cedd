"""The teacher: a bidirectional DiT trained by flow matching on fresh toy-world videos, and its sampler.

Every step renders new random scenes (the world is infinite, so there is no overfitting to a dataset);
``caption_dropout`` of the prompts are replaced by the empty prompt so that classifier-free guidance has an
unconditional branch. Timesteps are drawn uniformly and pushed through the schedule's shift, the same
density the shifted Euler sampler visits. The saved weights are an EMA, as for Wan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from selfforcing.config import PlatformConfig
from selfforcing.diffusion.samplers import euler_sample
from selfforcing.diffusion.schedule import FlowMatchSchedule
from selfforcing.forcing.rollout import NoiseSource
from selfforcing.models.factory import build_dit
from selfforcing.models.wan_dit import WanDiT
from selfforcing.objectives.denoising import flow_matching_loss
from selfforcing.training.config import EMAConfig
from selfforcing.training.ema import EMA

from .config import TeacherBudget
from .fit import WallClockGuard, fit
from .progress import Progress
from .world import ToyData

# Part of the teacher stage's cache key: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps, the cosine over the step budget only (v1 could stop at a wall-time cap).
CODE_VERSION = 2


def schedule_of(config: PlatformConfig) -> FlowMatchSchedule:
    return FlowMatchSchedule(config.schedule.num_train_timesteps, config.schedule.shift)


def lr_factor(step: int, budget: TeacherBudget) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction`` at the last step of the step budget."""
    if step < budget.warmup_steps:
        return (step + 1) / budget.warmup_steps
    span = max(1, budget.steps - 1 - budget.warmup_steps)
    progress = min(1.0, (step - budget.warmup_steps) / span)
    cos = 0.5 * (1 + math.cos(math.pi * progress))
    return budget.min_lr_fraction + (1 - budget.min_lr_fraction) * cos


def train_teacher(
    config: PlatformConfig, budget: TeacherBudget, data: ToyData, quiet: bool = False
) -> tuple[WanDiT, dict[str, float]]:
    """Train a bidirectional teacher for exactly ``budget.steps`` steps; returns the EMA model (eval mode)
    and training stats. Scenes and noise come from CPU generators seeded by the budget, so a run on a
    GPU sees the same batches as one on a CPU."""
    model = build_dit(config, data.device, seed=budget.seed).train()
    schedule = schedule_of(config)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    ema = EMA(EMAConfig(decay=budget.ema_decay, start_step=0))
    rng = np.random.default_rng(budget.seed)
    gen = torch.Generator().manual_seed(budget.seed)
    progress = Progress("teacher", budget.steps, quiet=quiet)

    def set_lr(step: int) -> None:
        for group in opt.param_groups:
            group["lr"] = budget.lr * lr_factor(step, budget)

    def step_loss(step: int) -> torch.Tensor:
        batch = data.batch(budget.batch_size, rng, budget.caption_dropout)
        b, f = batch.latents.shape[:2]
        u = torch.rand(b, 1, generator=gen, dtype=torch.float64)
        t = schedule.timestep(schedule.shift_sigma(u)).float().expand(b, f).to(data.device)
        noise = torch.randn(batch.latents.shape, generator=gen).to(data.device)
        return flow_matching_loss(model, batch.latents, batch.text, t, noise, schedule)

    final = fit(
        model, opt, budget.steps, progress, step_loss,
        # The projection waits for a tenth of the budget so that a GPU's warm-up steps do not dominate it.
        WallClockGuard("teacher", budget.abort_after_minutes, project_after=max(100, budget.steps // 10)),
        before_step=set_lr, after_step=lambda step: ema.update(model, step), window=50,
    )
    ema.copy_to(model)
    stats = {"steps": budget.steps, "final_loss": final, "seconds": progress.elapsed}
    return model.eval(), stats


@torch.no_grad()
def sample_teacher(
    model: WanDiT,
    config: PlatformConfig,
    data: ToyData,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_frames: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Latents [N, F, C, h, w] from the Euler sampler with CFG (the preset's teacher steps / shift / scale).

    Noise comes from per-sample seeded streams, so a video does not depend on how prompts are batched.
    """
    gen = config.generation
    schedule = schedule_of(config)
    frames = num_frames or data.world.num_frames
    out = []
    for a in range(0, len(prompts), batch_size):
        p, s = list(prompts[a : a + batch_size]), list(seeds[a : a + batch_size])
        text, neg = data.embed(p), data.negative(len(p))
        noise = NoiseSource(s).draw(data.latent_shape(frames), data.device, torch.float32)
        result = euler_sample(
            lambda x, t, text=text: model(x, t, text), noise, gen.teacher_steps, schedule,
            shift=gen.teacher_shift, uncond_denoise=lambda x, t, neg=neg: model(x, t, neg),
            guidance_scale=gen.guidance_scale,
        )
        out.append(result.sample)
    return torch.cat(out)

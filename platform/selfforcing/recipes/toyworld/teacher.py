"""The teacher: a bidirectional DiT trained by flow matching on fresh toy-world videos, and its sampler.

Training is the platform's teacher job (``jobs.teacher_job``: ``training.programs.denoising`` on the shared
training loop, in this process). Every step renders new random scenes, each a pure function of (seed, step,
sample index) (the world is infinite, so there is no overfitting to a dataset); ``caption_dropout`` of the
prompts are replaced by the empty prompt so that classifier-free guidance has an unconditional branch.
Timesteps are drawn uniformly and pushed through the schedule's shift, the same density the shifted Euler
sampler visits. The saved weights are an EMA, as for Wan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from selfforcing.config import PlatformConfig
from selfforcing.diffusion.samplers import euler_sample
from selfforcing.diffusion.schedule import FlowMatchSchedule
from selfforcing.forcing.rollout import NoiseSource
from selfforcing.models.wan_dit import WanDiT

from .config import TeacherBudget
from .jobs import run_stage, teacher_job, teacher_schedule
from .world import ToyData

# Part of the teacher stage's cache key: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps, the cosine over the step budget only (v1 could stop at a wall-time cap).
# v3: the platform's teacher job (per-sample draws of (seed, step, index), the shared loop's guarded AdamW).
CODE_VERSION = 3


def schedule_of(config: PlatformConfig) -> FlowMatchSchedule:
    return FlowMatchSchedule(config.schedule.num_train_timesteps, config.schedule.shift)


def lr_factor(step: int, budget: TeacherBudget) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction`` at the last step of the step budget (the
    job's ``training.lr_schedule``)."""
    return teacher_schedule(budget).factor(step, budget.steps)


def train_teacher(
    config: PlatformConfig, budget: TeacherBudget, run_dir: str | Path, quiet: bool = False
) -> tuple[WanDiT, dict[str, float]]:
    """Train a bidirectional teacher for exactly ``budget.steps`` steps with run folder ``run_dir`` (rerun:
    continues from its last checkpoint); returns the EMA model (eval mode) and training stats. Scenes and
    noise come from CPU generators, so a run on a GPU sees the same batches as one on a CPU."""
    job = teacher_job(config, budget, Path(run_dir))
    # The projection waits for a tenth of the budget so that a GPU's warm-up steps do not dominate it.
    return run_stage(job, config, "teacher", quiet, budget.abort_after_minutes, window=50,
                     project_after=max(100, budget.steps // 10))


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

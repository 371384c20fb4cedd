"""The causal students: ODE initialisation from the teacher, then Self Forcing (or CausVid) distillation.

Thin glue over the platform's algorithms: ``forcing.generate_ode_pairs`` + ``objectives.ode_regression_loss``
for the initialisation, ``training.GeneratorRole`` / ``CriticRole`` / ``DiscriminatorRole`` driven by
``training.LocalTrainer`` for the distribution-matching stage. Nothing here re-implements a loss.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import numpy as np
import torch

from selfforcing.config import PlatformConfig
from selfforcing.forcing import ODEPairs, generate_ode_pairs
from selfforcing.models.wan_dit import WanDiT
from selfforcing.objectives import Discriminator, ode_regression_loss
from selfforcing.training import (
    CriticRole,
    DiscriminatorRole,
    DMDConfig,
    EMAConfig,
    GeneratorRole,
    LocalTrainer,
    OptimConfig,
    RolloutTrainingConfig,
    SiDConfig,
    TrainBatch,
    TrainingConfig,
)

from .config import ODEInitBudget, SelfForcingBudget
from .fit import WallClockGuard, fit
from .progress import Progress
from .teacher import schedule_of
from .world import ToyData

# Parts of the students' cache keys: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps (v1 could stop at a wall-time cap).
ODE_INIT_CODE_VERSION = 2
SELF_FORCING_CODE_VERSION = 2


def generator_timesteps(config: PlatformConfig) -> list[float]:
    """The few-step generator's (warped) denoising timesteps."""
    sched = config.schedule
    steps = sched.denoising_steps
    return schedule_of(config).warp_timesteps(steps) if sched.warp_denoising_steps else list(steps)


def record_ode_pairs(
    teacher: WanDiT, config: PlatformConfig, budget: ODEInitBudget, data: ToyData, quiet: bool = False
) -> tuple[ODEPairs, list[str]]:
    """Teacher trajectories (CFG, the preset's teacher grid) over the world's captions, cycled.

    Returns pairs with states [N, K, F, C, h, w] and the N prompts.
    """
    gen = config.generation
    captions = data.captions
    prompts = [captions[i % len(captions)] for i in range(budget.num_pairs)]
    progress = Progress("ode_pairs", budget.num_pairs, quiet=quiet)
    parts: list[ODEPairs] = []
    for a in range(0, budget.num_pairs, budget.pair_batch):
        p = prompts[a : a + budget.pair_batch]
        seeds = [budget.seed * 1_000_003 + a + i for i in range(len(p))]
        parts.append(generate_ode_pairs(
            teacher, data.embed(p), data.latent_shape(data.world.num_frames), seeds, schedule_of(config),
            generator_timesteps(config), num_steps=gen.teacher_steps, shift=gen.teacher_shift,
            negative_text=data.negative(len(p)), guidance_scale=gen.guidance_scale,
        ))
        progress.update(a + len(p) - 1, pairs=a + len(p))
    pairs = ODEPairs(
        states=torch.cat([q.states for q in parts]), timesteps=parts[0].timesteps,
        target=torch.cat([q.target for q in parts]),
    )
    return pairs, prompts


def train_ode_init(
    teacher: WanDiT, config: PlatformConfig, budget: ODEInitBudget, data: ToyData, quiet: bool = False
) -> tuple[WanDiT, dict[str, float]]:
    """A block-causal student initialised from the teacher's weights and regressed onto its ODE pairs."""
    start = time.perf_counter()
    pairs, prompts = record_ode_pairs(teacher, config, budget, data, quiet)
    pair_seconds = time.perf_counter() - start
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=budget.lr, betas=(0.9, 0.999), weight_decay=0.01)
    gen = torch.Generator().manual_seed(budget.seed)
    progress = Progress("ode_init", budget.steps, quiet=quiet)
    schedule = schedule_of(config)

    def step_loss(step: int) -> torch.Tensor:
        idx = torch.randint(len(prompts), (budget.batch_size,), generator=gen)
        text = data.embed([prompts[i] for i in idx.tolist()])
        return ode_regression_loss(
            student, pairs.states[idx], pairs.timesteps, pairs.target[idx], text, schedule,
            config.video.frames_per_chunk, gen,
        )[0]

    final = fit(student, opt, budget.steps, progress, step_loss, WallClockGuard("ode_init", budget.abort_after_minutes))
    stats = {
        "pairs": len(prompts), "pair_seconds": pair_seconds, "steps": budget.steps,
        "final_loss": final, "seconds": time.perf_counter() - start,
    }
    return student.eval(), stats


def training_config(config: PlatformConfig, budget: SelfForcingBudget) -> TrainingConfig:
    """The platform's TrainingConfig for this budget (release structure, toy-scale rates)."""
    frames = config.video.num_frames
    longest = rollout_frames(config, budget)
    return TrainingConfig(
        objective=budget.objective,
        generator_optim=OptimConfig(lr=budget.generator_lr, max_grad_norm=1.0),
        critic_optim=OptimConfig(lr=budget.critic_lr, max_grad_norm=1.0),
        critic_steps_per_generator_step=budget.critic_steps_per_generator_step,
        ema=EMAConfig(decay=budget.ema_decay, start_step=0),
        rollout=RolloutTrainingConfig(
            kind=budget.rollout, min_frames=frames, max_frames=longest, loss_window_frames=frames
        ),
        dmd=DMDConfig(guidance_scale=budget.guidance_scale),
        sid=SiDConfig(guidance_scale=budget.guidance_scale),
        batch_size=budget.batch_size, max_steps=budget.steps, seed=budget.seed,
    )


def rollout_frames(config: PlatformConfig, budget: SelfForcingBudget) -> int:
    """Longest training rollout: ``max_rollout_frames`` for Self Forcing, the training length otherwise
    (CausVid's Diffusion Forcing samples are noised real videos of the training length)."""
    frames = config.video.num_frames
    if budget.rollout != "self_forcing" or budget.max_rollout_frames is None:
        return frames
    if budget.max_rollout_frames < frames:
        raise ValueError(
            f"self_forcing.max_rollout_frames={budget.max_rollout_frames} must be >= the training length "
            f"video.num_frames={frames}"
        )
    return budget.max_rollout_frames


def generator_platform(config: PlatformConfig, budget: SelfForcingBudget) -> PlatformConfig:
    """The platform config the generator rolls out with: a rolling KV cache of the training length when
    rollouts are longer than it (the window the scorers and the extrapolation evaluation see)."""
    if rollout_frames(config, budget) == config.video.num_frames:
        return config
    rolling = config.model_copy(deep=True)
    rolling.generation.window_frames = config.video.num_frames
    return rolling


def _scoring_role(teacher: WanDiT, tc: TrainingConfig, config: PlatformConfig, seed: int):
    """Critic (DMD / SiD: frozen teacher + a trainable copy) or discriminator (GAN: a copy + head)."""
    critic = copy.deepcopy(teacher).train().requires_grad_(True)
    if tc.objective == "gan":
        return DiscriminatorRole(Discriminator(critic, tc.gan.num_registers), schedule_of(config), tc, seed)
    real = copy.deepcopy(teacher).eval().requires_grad_(False)
    return CriticRole(real, critic, schedule_of(config), tc, seed)


def _batches(data: ToyData, batch_size: int, seed: int) -> Iterator[TrainBatch]:
    """Endless batches: captions (+ the negative prompt) and real latents of the same scenes."""
    rng = np.random.default_rng(seed)
    while True:
        b = data.batch(batch_size, rng)
        yield TrainBatch(text=b.text, negative_text=data.negative(batch_size), real_latents=b.latents)


def train_self_forcing(
    student: WanDiT, teacher: WanDiT, config: PlatformConfig, budget: SelfForcingBudget, data: ToyData,
    quiet: bool = False, name: str = "self_forcing",
) -> tuple[WanDiT, dict[str, float]]:
    """Distil ``student`` (in place) for exactly ``budget.steps`` steps with the budget's objective and
    rollout; returns its EMA copy. ``name`` is the stage named by a wall-time abort."""
    tc = training_config(config, budget)
    generator = GeneratorRole(student.train().requires_grad_(True), generator_platform(config, budget), tc)
    trainer = LocalTrainer(generator, _scoring_role(teacher, tc, config, budget.seed), tc)
    progress = Progress(budget.rollout, budget.steps, quiet=quiet)
    guard = WallClockGuard(name, budget.abort_after_minutes)
    for step, batch in zip(range(budget.steps), _batches(data, budget.batch_size, budget.seed), strict=False):
        m = trainer.train_step(batch)
        progress.update(step, **{k: v for k, v in m.items() if k.endswith("_loss")})
        guard.check(step + 1, budget.steps)
    model = copy.deepcopy(student).eval()
    if generator.ema.active:
        generator.ema.copy_to(model)
    s = trainer.state
    stats = {
        "steps": s.step, "generator_steps": s.generator_steps, "critic_steps": s.critic_steps,
        "skipped_generator_steps": s.skipped_generator_steps, "seconds": progress.elapsed,
    }
    return model.requires_grad_(False), stats

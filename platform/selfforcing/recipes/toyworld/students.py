"""The causal students: ODE initialisation from the teacher, then Self Forcing (or CausVid) distillation.

Thin glue over the platform's jobs: the teacher's ODE pairs are written with the ode_pairs job's plan and
shard actor (``data.pipelines.ode_pairs``) in this process, then the ODE-init and Self Forcing jobs run on
the shared training loop (``jobs.run_stage``). Nothing here re-implements a loss or a loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from selfforcing.config import PlatformConfig
from selfforcing.models.wan_dit import WanDiT
from selfforcing.training import (
    DMDConfig,
    EMAConfig,
    OptimConfig,
    RolloutTrainingConfig,
    SiDConfig,
    TrainingConfig,
)

from .config import ODEInitBudget, SelfForcingBudget
from .jobs import ode_init_job, run_stage, save_input, self_forcing_job
from .world import ToyData

# Parts of the students' cache keys: bump when a change here changes what the same budget learns.
# v2: exactly ``steps`` steps (v1 could stop at a wall-time cap). v3: the platform's ode_pairs / ode_init /
# self_forcing jobs (pair seeds of pair_seed, per-sample draws of (seed, step, index), one pass per epoch).
ODE_INIT_CODE_VERSION = 3
SELF_FORCING_CODE_VERSION = 3


def write_ode_pairs(
    teacher: Path, config: PlatformConfig, budget: ODEInitBudget, data: ToyData, folder: Path
) -> Path:
    """Teacher trajectories (CFG, the preset's teacher grid) over the world's captions, cycled, as an
    ``ode_trajectories`` dataset in ``folder / "pairs"``: the ode_pairs job (pair i: caption i mod N, noise
    seed ``pair_seed(seed, i)``) with its shard actor called here instead of in a Ray Data pool. Finished
    shards are kept, so a rerun computes only the missing ones."""
    from selfforcing.data.embeddings import write_embeddings
    from selfforcing.data.pipelines import ODEPairsJobConfig
    from selfforcing.data.pipelines.ode_pairs import ODEShardActor, plan_ode_pairs
    from selfforcing.data.shards import ShardedDataset

    captions = data.captions
    embeddings = folder / "embeddings.parquet"
    if not embeddings.exists():
        write_embeddings(embeddings, captions, data.embed(captions).cpu(),
                         negative_prompts=[data.negative_prompt] * len(captions),
                         negative_embeddings=data.negative(len(captions)).cpu())
    job = ODEPairsJobConfig.model_validate({
        "platform": config.model_dump(mode="json"), "run": {"name": "pairs", "storage_path": str(folder)},
        "embeddings": str(embeddings), "teacher": {"uri": str(teacher)}, "num_pairs": budget.num_pairs,
        "seed": budget.seed, "shard_size": budget.pair_batch, "pool": {"batch_size": budget.pair_batch},
    })
    plan = plan_ode_pairs(job)
    dataset = ShardedDataset(plan.output, "ode_trajectories")
    dataset.prepare(len(plan.shards), plan.fingerprint)
    missing = dataset.missing()
    if missing:
        actor = ODEShardActor(str(plan.output), job, plan.teacher_path, plan.teacher_platform)
        for index in missing:
            actor({"task": np.array([json.dumps(plan.task(index))])})
    return plan.output


def train_ode_init(
    teacher: WanDiT, config: PlatformConfig, budget: ODEInitBudget, data: ToyData, run_dir: str | Path,
    quiet: bool = False,
) -> tuple[WanDiT, dict[str, float]]:
    """A block-causal student initialised from the teacher's weights and regressed onto its ODE pairs."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    teacher_dir = save_input(teacher, config, run_dir / "inputs" / "teacher")
    pairs = write_ode_pairs(teacher_dir, config, budget, data, run_dir / "ode_pairs")
    pair_seconds = time.perf_counter() - start
    job = ode_init_job(config, budget, run_dir, teacher_dir, pairs)
    student, stats = run_stage(job, config, "ode_init", quiet, budget.abort_after_minutes)
    stats.update(pairs=budget.num_pairs, pair_seconds=pair_seconds, seconds=time.perf_counter() - start)
    return student, stats


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


def train_self_forcing(
    student: WanDiT, teacher: WanDiT, config: PlatformConfig, budget: SelfForcingBudget, run_dir: str | Path,
    quiet: bool = False, name: str = "self_forcing",
) -> tuple[WanDiT, dict[str, float]]:
    """Distil ``student`` for exactly ``budget.steps`` steps with the budget's objective and rollout; returns
    its EMA copy. ``name`` is the stage named by a wall-time abort."""
    run_dir = Path(run_dir)
    tc = training_config(config, budget)
    job = self_forcing_job(
        generator_platform(config, budget), tc, budget, run_dir,
        save_input(student, config, run_dir / "inputs" / "student"),
        save_input(teacher, config, run_dir / "inputs" / "teacher"),
    )
    return run_stage(job, config, name, quiet, budget.abort_after_minutes,
                     counters=("generator_steps", "critic_steps", "skipped_generator_steps"))

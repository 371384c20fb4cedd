"""Typed budgets of the toy-world recipe: one section per stage, plus the evaluation set.

Every budget is a step count (never wall time): the same command trains the same steps and gives the
same numbers on a quiet or a busy machine. ``abort_after_minutes`` only aborts a stage with an error
(``guard.WallClockGuard``). Sizes of the model and the world come from the ``toy`` preset and
``ToyWorldConfig``. ``RecipeConfig.quick()`` is the seconds-scale variant used by tests (it must
exercise every code path, not learn anything).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from selfforcing.config import PlatformConfig
from selfforcing.config.schema import StrictModel

ABORT = "abort the stage with an error after this wall time (None = no limit); it never shortens training"


class TeacherBudget(StrictModel):
    """Flow-matching training of the bidirectional teacher on fresh renderer videos.

    The defaults are the shipped teacher's recipe (trained on one GPU by ``teacher_gpu``: ~27 steps/s of
    batch 256 on an H200, so ~2.5 minutes); on 2 CPU cores the dim-64 model sees ~90 videos/s, so a
    retrain of these 922k videos takes ~3 hours there.
    """

    steps: int = Field(3600, gt=0, description="optimiser steps; the cosine schedule decays over exactly these")
    batch_size: int = Field(256, gt=0, description="videos per step (fresh random scenes each step)")
    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    min_lr_fraction: float = Field(0.05, ge=0, le=1, description="cosine decay floor as a fraction of lr")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="fraction of empty prompts (for CFG)")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA of the weights that are saved and sampled")
    abort_after_minutes: float | None = Field(None, gt=0, description=ABORT)
    seed: int = Field(0, description="seed of weights, scenes and noise")


class ODEInitBudget(StrictModel):
    """Teacher ODE pairs and the causal student's regression onto them."""

    num_pairs: int = Field(384, gt=0, description="teacher trajectories (prompt x seed) to record")
    pair_batch: int = Field(128, gt=0, description="trajectories sampled per teacher batch")
    steps: int = Field(400, gt=0, description="regression optimiser steps")
    batch_size: int = Field(32, gt=0, description="pairs per regression step")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate of the student")
    abort_after_minutes: float | None = Field(None, gt=0, description=ABORT)
    seed: int = Field(1, description="seed of pairs and draws")


class SelfForcingBudget(StrictModel):
    """Self Forcing (or CausVid) distillation of the ODE-initialised student against the teacher."""

    objective: Literal["dmd", "sid", "gan"] = Field("dmd", description="distribution-matching objective")
    steps: int = Field(300, gt=0, description="training steps (critic update every step)")
    critic_steps_per_generator_step: int = Field(2, gt=0, description="generator updated every N steps")
    batch_size: int = Field(16, gt=0, description="rollouts per step")
    generator_lr: float = Field(
        3e-5, gt=0,
        description="generator AdamW learning rate (1e-4 moved the student further from the teacher: higher "
        "fidelity, but objects that stand still; docs/results/toyworld.md)",
    )
    critic_lr: float = Field(4e-4, gt=0, description="critic / discriminator AdamW learning rate")
    guidance_scale: float = Field(2.0, description="real-score CFG in the x0 = c + g (c - u) form")
    ema_decay: float = Field(0.95, ge=0, lt=1, description="generator EMA decay (what is evaluated)")
    rollout: Literal["self_forcing", "diffusion_forcing"] = Field(
        "self_forcing", description="own outputs as context, or Diffusion Forcing samples (CausVid)"
    )
    max_rollout_frames: int | None = Field(
        24, gt=0,
        description="longest Self Forcing rollout in latent frames (None = the training length). Longer "
        "rollouts draw their length uniformly from [training length, this], run with a rolling KV cache of "
        "the training length, and the loss sees only their last window: the model is trained on the "
        "contexts that extrapolation with a rolling cache produces (SPEC section 3-4)",
    )
    abort_after_minutes: float | None = Field(None, gt=0, description=ABORT)
    seed: int = Field(2, description="base seed of rollouts and score draws")


class BaselineBudget(StrictModel):
    """Flow-matching training of the ablation's causal baselines (Teacher / Diffusion Forcing)."""

    steps: int = Field(800, gt=0, description="optimiser steps (~ a Self Forcing stage's CPU time)")
    batch_size: int = Field(32, gt=0, description="videos per step")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    abort_after_minutes: float | None = Field(None, gt=0, description=ABORT)
    seed: int = Field(3, description="seed of scenes and draws")


class EvalBudget(StrictModel):
    """What every stage is measured on."""

    seeds_per_caption: int = Field(2, gt=0, description="videos per caption")
    max_captions: int | None = Field(None, gt=1, description="first N captions of the world (None = all)")
    extrapolate_frames: int = Field(36, gt=0, description="latent frames of the extrapolation run")
    window_frames: int = Field(12, gt=0, description="rolling KV cache window for extrapolation")
    videos_to_write: int = Field(4, ge=0, description="sample MP4s per stage")
    seed: int = Field(1000, description="first noise seed (disjoint from training seeds)")


class RecipeConfig(StrictModel):
    """The whole toy-world recipe."""

    preset: str = Field("toy", description="platform config preset (model, codec, schedule, video)")
    overrides: list[str] = Field(
        default_factory=list, description="dotted KEY=VALUE overrides of the preset (e.g. generation.*)"
    )
    teacher_source: Literal["auto", "released", "train"] = Field(
        "auto",
        description="released: the teacher shipped in the package (checksum and config checked); train: train "
        "it with the teacher budget (cached); auto: released when the package ships one, else train",
    )
    teacher: TeacherBudget = Field(default_factory=TeacherBudget, description="teacher stage")
    ode_init: ODEInitBudget = Field(default_factory=ODEInitBudget, description="ODE pairs + regression")
    self_forcing: SelfForcingBudget = Field(default_factory=SelfForcingBudget, description="distillation")
    baselines: BaselineBudget = Field(default_factory=BaselineBudget, description="ablation baselines")
    eval: EvalBudget = Field(default_factory=EvalBudget, description="evaluation set")
    threads: int | None = Field(
        1, gt=0,
        description="torch CPU threads (None = torch's default). 1 by default: at these sizes a second thread "
        "gains little, and on a shared machine OpenMP spin-waiting made 2 threads ~7x slower than 1",
    )

    @classmethod
    def quick(cls) -> RecipeConfig:
        """Seconds per stage: for tests and smoke runs (learns nothing useful; always trains its teacher)."""
        return cls(
            overrides=["generation.teacher_steps=8"],  # on the ODE grid of the 4 generator steps
            teacher_source="train",
            teacher=TeacherBudget(steps=4, batch_size=4, warmup_steps=1),
            ode_init=ODEInitBudget(num_pairs=8, pair_batch=8, steps=3, batch_size=4),
            self_forcing=SelfForcingBudget(steps=4, batch_size=2),
            baselines=BaselineBudget(steps=3, batch_size=2),
            eval=EvalBudget(seeds_per_caption=1, max_captions=6, extrapolate_frames=18, window_frames=9,
                            videos_to_write=2),
        )


def training_identity(config: PlatformConfig) -> dict[str, Any]:
    """The parts of a platform config that decide what a stage learns: model, codecs, schedule, video.

    Not ``runtime`` (device, threads: the same up to float rounding) nor ``generation`` (how a model is
    sampled, which is part of an evaluation's key instead).
    """
    return config.model_dump(mode="json", include={"model", "text_encoder", "vae", "video", "schedule"})


def identity(section: StrictModel) -> dict[str, Any]:
    """A config section's fields that decide what a stage computes: all but ``abort_after_minutes`` (a
    guard that can only abort, so changing it must not invalidate finished stages)."""
    return section.model_dump(mode="json", exclude={"abort_after_minutes"})


def config_key(*parts: StrictModel | str | dict) -> str:
    """Short stable hash of config sections (their ``identity``), digests and version tags: a stage's
    cache key."""
    blob = json.dumps([identity(p) if isinstance(p, StrictModel) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

"""Typed configs of the supervised training jobs on the shared worker loop.

- ``TeacherJobConfig`` (``jobs/train_teacher.py``): flow-matching training of a bidirectional DiT on video
  latents: the toy world's teacher from scratch, or a Wan teacher fine-tuned on a latents dataset. The same
  program trains the block-causal Teacher Forcing / Diffusion Forcing baselines (``training.loss``).
- ``ODEInitJobConfig`` (``jobs/ode_init.py``): regression of the block-causal student, initialised from the
  teacher's weights, onto the teacher's ODE trajectories (SPEC section 5).

Both register their result (the EMA when one is kept, else the trained weights) under
``tracking.register_as``, so the next job takes ``models:/<name>@<alias>`` as input.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config.schema import StrictModel
from .config import EMAConfig, OptimConfig
from .job_config import TrainingJobBase, check_model_source


class LRSchedule(StrictModel):
    """Learning rate as a pure function of the step: linear warm-up, then constant or cosine decay to
    ``min_lr_fraction`` at the last step of the step budget (the toy teacher's schedule)."""

    kind: Literal["constant", "cosine"] = Field("constant", description="after the warm-up: constant or cosine")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps (lr (k+1)/warmup at step k)")
    min_lr_fraction: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of optim.lr")

    def factor(self, step: int, max_steps: int) -> float:
        """Multiplier of the peak learning rate at training step ``step`` of ``max_steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, max_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_fraction + (1 - self.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def _adamw(lr: float) -> OptimConfig:
    return OptimConfig(lr=lr, betas=(0.9, 0.999), max_grad_norm=1.0)


class DenoisingTrainingConfig(StrictModel):
    """Flow matching on data: x_t = (1 - s) x0 + s eps, the network predicts eps - x0."""

    loss: Literal["flow_matching", "teacher_forcing", "diffusion_forcing"] = Field(
        "flow_matching", description="flow_matching: a bidirectional teacher (one t per video); "
        "teacher_forcing / diffusion_forcing: the block-causal baselines (SPEC section 5)",
    )
    optim: OptimConfig = Field(default_factory=lambda: _adamw(1e-4), description="AdamW of the network")
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule, description="warm-up and decay over max_steps")
    ema: EMAConfig | None = Field(
        default_factory=lambda: EMAConfig(decay=0.995, start_step=0),
        description="EMA of the weights (what is exported and registered); null = the trained weights",
    )
    caption_dropout: float = Field(
        0.1, ge=0, lt=1, description="fraction of samples trained on the negative (empty) prompt, for CFG"
    )
    batch_size: int = Field(32, gt=0, description="videos per step over all workers")
    max_steps: int = Field(1000, gt=0, description="training steps")
    seed: int = Field(0, description="seed of every per-sample draw (noise, t, caption dropout)")


class DenoisingModels(StrictModel):
    """Where the trained network starts."""

    init: str = Field(
        "random:0", description="random:<seed> (from scratch), a generator directory or Wan2.1 checkpoint, "
        "or models:/<name>@<alias> (fine-tuning; the baselines start from the teacher)",
    )

    @field_validator("init")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_model_source(value)


class DenoisingData(StrictModel):
    """Videos (as latents) and their prompts' embeddings."""

    source: Literal["random", "toyworld", "latents"] = Field(
        "random", description="Gaussian latents with random embeddings (tests), fresh toy-world videos, "
        "or a latents Parquet dataset joined by prompt with an embeddings dataset",
    )
    path: str | None = Field(None, description="latents dataset (source=latents)")
    embeddings: str | None = Field(
        None, description="embeddings dataset holding every prompt of the latents (source=latents)"
    )
    num_prompts: int = Field(64, ge=1, description="prompts of the random source")
    seed: int = Field(0, description="seed of the data (sample order, toy scenes, random latents)")


class TeacherJobConfig(TrainingJobBase):
    """Flow-matching training of a DiT on videos (``jobs/train_teacher.py``)."""

    kind: ClassVar[str] = "teacher"

    training: DenoisingTrainingConfig = Field(default_factory=DenoisingTrainingConfig, description="loss, optimiser")
    models: DenoisingModels = Field(default_factory=DenoisingModels, description="starting weights")
    data: DenoisingData = Field(default_factory=DenoisingData, description="videos and prompts")

    @model_validator(mode="after")
    def _data(self) -> TeacherJobConfig:
        d = self.data
        if d.source == "latents" and not (d.path and d.embeddings):
            raise ValueError(
                f"data.source='latents' needs data.path (a latents dataset; got {d.path!r}) and data.embeddings "
                f"(an embeddings dataset with their prompts; got {d.embeddings!r})"
            )
        if d.source == "toyworld" and self.platform.vae.kind != "pixel_unshuffle":
            raise ValueError("data.source='toyworld' needs the toy preset (platform.preset: toy)")
        return self


class ODEInitTrainingConfig(StrictModel):
    """Regression of the block-causal student onto teacher ODE trajectories."""

    optim: OptimConfig = Field(default_factory=lambda: _adamw(5e-4), description="AdamW of the student")
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule, description="warm-up and decay over max_steps")
    ema: EMAConfig | None = Field(None, description="EMA of the weights (null = the trained weights are exported)")
    shared_across_chunks: bool = Field(
        False, description="one recorded state per sample for all chunks (else one per chunk, as the release)"
    )
    batch_size: int = Field(32, gt=0, description="trajectories per step over all workers")
    max_steps: int = Field(400, gt=0, description="training steps")
    seed: int = Field(0, description="seed of the per-sample draws (which recorded state each chunk sees)")


class ODEInitModels(StrictModel):
    """The student's starting weights: the teacher's (SPEC section 5)."""

    init: str = Field(
        "random:0", description="the teacher: models:/<name>@<alias>, a generator directory, or random:<seed>"
    )

    @field_validator("init")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_model_source(value)


class ODEInitData(StrictModel):
    """The ode_trajectories dataset written by ``jobs/ode_pairs.py``."""

    path: str = Field(min_length=1, description="ode_trajectories Parquet file or sharded directory")
    seed: int = Field(0, description="seed of the order in which trajectories are visited (one pass per epoch)")


class ODEInitJobConfig(TrainingJobBase):
    """ODE initialisation of the causal student (``jobs/ode_init.py``)."""

    kind: ClassVar[str] = "ode_init"

    training: ODEInitTrainingConfig = Field(default_factory=ODEInitTrainingConfig, description="optimiser, draws")
    models: ODEInitModels = Field(default_factory=ODEInitModels, description="starting weights")
    data: ODEInitData = Field(description="teacher ODE trajectories")

"""The typed configs of the training jobs: the sections every training job shares, and Self Forcing's.

Every training job (``jobs/self_forcing.py``, ``jobs/train_teacher.py``, ``jobs/ode_init.py``) runs on the
same worker loop (``training.loop``), so they share ``TrainingJobBase``: run identity and storage, Ray,
MLflow, the DeepSpeed worker group, checkpoints, fault tolerance and logging. Each adds its ``training``,
``models`` and ``data`` sections. Everything is validated before any actor starts; each field says what it
is for.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config.job import PlatformSection, RayConfig, RunConfig, TrackingConfig
from ..config.schema import StrictModel
from .config import TrainingConfig


class ScalingSection(StrictModel):
    """Generator workers: a Ray Train worker group, each worker a DeepSpeed data-parallel rank."""

    num_workers: int = Field(2, ge=1, description="generator workers (data-parallel ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker (else CPU with gloo)")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs reserved per worker (fractions allowed)")
    zero_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage of the generator")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="micro-batches per step per worker: fewer workers keep the same global batch"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU")


class ScoringSection(StrictModel):
    """The critic (DMD / SiD) or discriminator (GAN) actor group: its own processes, placement group,
    process group and optimiser. Generator worker r talks to actor r mod num_actors."""

    num_actors: int = Field(1, ge=1, description="actor replicas (data-parallel among themselves)")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs reserved per actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (0 on CPU clusters)")
    zero_stage: Literal[1, 2, 3] = Field(2, description="ZeRO stage of the trained network (critic / discriminator)")
    real_score_zero3: bool = Field(
        False, description="partition the frozen real score (teacher) with ZeRO-3 inference over the group"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement-group strategy of the actors' bundles"
    )


def check_model_source(value: str | None) -> str | None:
    """``random:<integer seed>``, a path or a ``models:/`` URI (resolved when the job starts)."""
    if value is not None and value.startswith("random:") and not value[len("random:"):].isdigit():
        raise ValueError(f"{value!r}: a random source is 'random:<integer seed>'")
    return value


class ModelsSection(StrictModel):
    """Where each network's weights come from: ``random:<seed>`` (tests, tiny runs), a generator directory
    or Wan2.1 / Self Forcing checkpoint path, or an MLflow ``models:/<name>@<alias>`` URI."""

    generator: str = Field("random:0", description="the student's starting weights (ODE-init in real runs)")
    teacher: str = Field("random:1", description="the frozen real score (DMD / SiD) and GAN backbone source")
    critic: str | None = Field(None, description="fake score / discriminator backbone; None = copy of the teacher")

    @field_validator("generator", "teacher", "critic")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        return check_model_source(value)


class DataSection(StrictModel):
    """Prompts (and, for GAN / CausVid, real latents) of each step's global batch."""

    source: Literal["random", "toyworld", "embeddings"] = Field(
        "random", description="random embeddings (tests), the toy world, or a prompt-embeddings Parquet set"
    )
    path: str | None = Field(None, description="prompt-embeddings Parquet file or folder (source=embeddings)")
    num_prompts: int = Field(64, ge=1, description="prompts of the random source")
    seed: int = Field(0, description="seed of the data (prompt order, random embeddings, real latents)")


class CheckpointSection(StrictModel):
    """Whole-trainer checkpoints (generator engine, EMA, scoring actors, counters). Every random draw is
    a function of (seed, step, sample index), so the step count is the whole RNG and data position."""

    every_n_steps: int = Field(0, ge=0, description="checkpoint period in steps (0 = only at the end)")
    num_to_keep: int = Field(2, ge=1, description="complete checkpoints kept")
    resume_from: str | None = Field(
        None, description="start from this checkpoint folder, or its pyarrow.fs URI when run.storage_path is a "
        "URI (default: the run's newest complete one)"
    )


class FaultSection(StrictModel):
    """What a run survives before it stops with an error."""

    max_failures: int = Field(
        2, ge=0, description="restarts of the step group (a dead worker or scoring actor) from the last checkpoint"
    )
    max_consecutive_nonfinite: int = Field(
        20, ge=1, description="stop when this many steps in a row had a non-finite loss or gradient"
    )


class LoggingSection(StrictModel):
    """Console progress and MLflow artifacts."""

    every_n_steps: int = Field(1, ge=1, description="progress line and MLflow metrics period")
    sample_video: bool = Field(True, description="log a sample video of the final EMA generator")
    sample_frames: int | None = Field(None, gt=0, description="latent frames of the sample (None = video.num_frames)")


class TrainingJobBase(PlatformSection):
    """What every training job shares. Subclasses add ``training`` (with ``batch_size``, ``max_steps`` and
    ``seed``), ``models`` and ``data``, and name their step program in ``kind``."""

    kind: ClassVar[str]

    run: RunConfig = Field(description="run name and storage (same name + storage = resume)")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow")
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Ray Train workers")
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="checkpoints")
    fault: FaultSection = Field(default_factory=FaultSection, description="fault tolerance")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="progress and artifacts")

    training: Any  # each job's typed training section

    @property
    def micro_batch_size(self) -> int:
        s = self.scaling
        return self.training.batch_size // (s.num_workers * s.gradient_accumulation_steps)

    @model_validator(mode="after")
    def _batch_fits_workers(self) -> TrainingJobBase:
        s, b = self.scaling, self.training.batch_size
        per = s.num_workers * s.gradient_accumulation_steps
        if b % per:
            raise ValueError(
                f"training.batch_size={b} must be a multiple of scaling.num_workers x "
                f"scaling.gradient_accumulation_steps = {s.num_workers} x {s.gradient_accumulation_steps} = {per}"
            )
        return self

    def with_tracking_uri(self, tracking_uri: str) -> TrainingJobBase:
        """The same job with the MLflow store made explicit (workers resolve ``models:/`` URIs in it, and
        do not see the driver's environment)."""
        return self.model_copy(update={"tracking": self.tracking.model_copy(update={"tracking_uri": tracking_uri})})

    def with_max_steps(self, max_steps: int | None) -> TrainingJobBase:
        """The same job with ``training.max_steps`` replaced (validated again)."""
        if max_steps is None:
            return self
        data = self.model_dump()
        data["training"]["max_steps"] = int(max_steps)
        return type(self).model_validate(data)


class SelfForcingJobConfig(TrainingJobBase):
    """One distributed Self Forcing (or CausVid) run."""

    kind: ClassVar[str] = "self_forcing"

    training: TrainingConfig = Field(default_factory=TrainingConfig, description="objective and hyperparameters")
    scoring: ScoringSection = Field(default_factory=ScoringSection, description="critic / discriminator actors")
    models: ModelsSection = Field(default_factory=ModelsSection, description="weights of each network")
    data: DataSection = Field(default_factory=DataSection, description="prompts and real latents")
    overlap: bool = Field(
        True, description="run the critic's update on step k while the generator back-propagates and rolls "
        "out step k+1 (same numbers as sequential)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SelfForcingJobConfig:
        s = self.scaling
        if s.num_workers % self.scoring.num_actors:
            raise ValueError(
                f"scaling.num_workers={s.num_workers} must be a multiple of scoring.num_actors="
                f"{self.scoring.num_actors} (each actor serves the same number of workers)"
            )
        needs_real = self.training.objective == "gan" or self.training.rollout.kind == "diffusion_forcing"
        if needs_real and self.data.source == "embeddings":
            raise ValueError(
                f"training.objective={self.training.objective!r} with rollout.kind="
                f"{self.training.rollout.kind!r} needs real latents: data.source must be 'random' or 'toyworld'"
            )
        if self.data.source == "embeddings" and not self.data.path:
            raise ValueError("data.source='embeddings' needs data.path (a prompt-embeddings Parquet set)")
        if self.data.source == "toyworld" and self.platform.vae.kind != "pixel_unshuffle":
            raise ValueError("data.source='toyworld' needs the toy preset (platform.preset: toy)")
        return self

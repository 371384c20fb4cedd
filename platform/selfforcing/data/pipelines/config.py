"""Typed configs of the data jobs (``jobs/encode_prompts.py``, ``jobs/ode_pairs.py``).

Both are ``PlatformSection`` configs (``platform: {preset: tiny, ...}``) with the shared ``run``,
``tracking`` and ``ray`` sections, an actor ``pool`` and their own inputs. Load them with
``config.job.load_job_config(EncodePromptsJobConfig, yaml, overrides)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ...config.job import PlatformSection, RayConfig, RunConfig, TrackingConfig
from ...config.schema import StrictModel

Dtype = Literal["float32", "bfloat16", "float16"]


class ActorPoolConfig(StrictModel):
    """A Ray Data actor pool: ``size`` actors, each holding one model, each reserving these resources."""

    size: int = Field(1, gt=0, description="actors in the pool (each loads its own copy of the model)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per actor (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (0 = CPU; 1 = one GPU each)")
    batch_size: int = Field(8, gt=0, description="rows per model call inside an actor")


class DataJobConfig(PlatformSection):
    """What every data job shares: identity, tracking, cluster, pool, output and sharding."""

    run: RunConfig = Field(description="run name and storage: the output defaults to <storage_path>/<name>")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow run of the job")
    ray: RayConfig = Field(default_factory=RayConfig, description="cluster to run on")
    pool: ActorPoolConfig = Field(default_factory=ActorPoolConfig, description="actor pool of the model")
    output: str | None = Field(None, description="dataset directory written (None = <run.storage_path>/<run.name>)")
    shard_size: int = Field(256, gt=0, description="rows per output shard (the unit of resumption)")
    max_shards: int | None = Field(
        None, gt=0, description="compute at most this many missing shards in this run (None = all); "
        "a rerun continues with the rest",
    )

    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path(self.run.storage_path) / self.run.name


class EncodePromptsJobConfig(DataJobConfig):
    """Prompts (Parquet or a text file, one prompt a line) -> prompt embeddings (Parquet shards)."""

    input: str = Field(min_length=1, description="prompt set: a .parquet file / directory, or a text file")
    split: str | None = Field(None, description="encode only this split of a Parquet prompt set (None = all)")
    negative_prompt: str | None = Field(
        None, description="negative prompt of rows without one (None = platform.generation.negative_prompt)"
    )
    encode_negative: bool = Field(True, description="store each row's negative embedding (needed for guidance)")
    dtype: Dtype | None = Field(None, description="encoder and stored dtype (None = platform.runtime.dtype)")
    encoder_seed: int = Field(0, description="seed of a random-weight encoder (text_encoder.path unset)")
    shard_size: int = Field(256, gt=0, description="prompts per output shard")


class TeacherSource(StrictModel):
    """The teacher: a registered model, a generator directory, or random weights (tiny tests)."""

    uri: str | None = Field(
        None, description="models:/<name>@<alias>, models:/<name>/<v>, runs:/..., or a generator directory; "
        "None = random weights built from the platform config",
    )
    which: str = Field("generator_ema", description="weights inside a training checkpoint (EMA or raw)")
    seed: int = Field(0, description="seed of random weights (uri unset)")


class ODEPairsJobConfig(DataJobConfig):
    """Prompt embeddings -> teacher ODE trajectories (Parquet shards), resumable shard by shard."""

    embeddings: str = Field(min_length=1, description="embeddings dataset written by encode_prompts")
    teacher: TeacherSource = Field(default_factory=TeacherSource, description="the teacher to sample")
    num_pairs: int | None = Field(
        None, gt=0, description="trajectories to record; pair i uses prompt i mod N (None = one per prompt)"
    )
    seed: int = Field(0, description="job seed: pair i's noise seed is pair_seed(seed, i)")
    num_steps: int | None = Field(None, gt=0, description="Euler steps (None = platform.generation.teacher_steps)")
    shift: float | None = Field(None, gt=0, description="teacher grid shift (None = platform.generation.teacher_shift)")
    guidance_scale: float | None = Field(
        None, ge=0, description="CFG scale (None = platform.generation.guidance_scale; 1 = off)"
    )
    latent_frames: int | None = Field(
        None, gt=0, description="latent frames per trajectory (None = those of platform.video.num_frames)"
    )
    shard_size: int = Field(
        64, gt=0, description="pairs per output shard (an actor holds one shard in memory: ~20 MB a pair "
        "at Wan size with K=4 bf16 states)",
    )

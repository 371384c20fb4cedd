"""The ode_pairs job: teacher ODE trajectories over a Ray Data actor pool, resumable shard by shard.

Pair i (0 <= i < num_pairs) conditions on prompt row i mod N of the embeddings dataset and starts from
noise seeded by ``pair_seed(seed, i)``; shard s holds pairs [s * shard_size, (s + 1) * shard_size). Both are
pure functions of the config, so how shards are spread over actors, the pool size and reruns never change
a trajectory (up to float rounding of different batch sizes: ``pool.batch_size`` is not part of it).
Each actor holds one teacher (a registered model, a generator directory, or seeded random weights) and
samples with ``forcing.generate_ode_pairs`` (Euler, CFG against the row's negative embedding, the states
recorded at the generator's warped denoising steps). Finished shards are skipped on a rerun.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from ...config import PlatformConfig, video_geometry
from ...diffusion.schedule import FlowMatchSchedule
from ...forcing.ode_init import ODEPairs, generate_ode_pairs, ode_grid_indices
from ...models.factory import build_dit, checkpoint_model_config, load_dit, resolve_device
from ...tracking import is_model_uri, resolve_model
from ..batches import embedding_batch
from ..schemas import check_schema
from ..shards import dataset_files
from ..trajectories import ode_table
from .config import ODEPairsJobConfig, TeacherSource
from .runner import DataJobResult, ShardActor, ShardPlan, run_sharded_job, shard_ranges


def pair_seed(job_seed: int, pair_index: int) -> int:
    """The noise seed of pair ``pair_index`` in a job seeded ``job_seed``: a 63-bit hash of both, so
    seeds of different jobs or pairs never coincide by construction (``seed * K + i`` schemes do)."""
    digest = hashlib.sha256(f"selfforcing.ode_pair:{int(job_seed)}:{int(pair_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator_timesteps(platform: PlatformConfig) -> list[float]:
    """The few-step generator's denoising timesteps (warped through the shifted grid if configured)."""
    sched = platform.schedule
    if not sched.warp_denoising_steps:
        return list(sched.denoising_steps)
    return FlowMatchSchedule(sched.num_train_timesteps, sched.shift).warp_timesteps(sched.denoising_steps)


@dataclass(frozen=True)
class TeacherSampling:
    """How the teacher samples: Euler grid, guidance, the recorded timesteps and the latent shape."""

    num_steps: int
    shift: float
    guidance_scale: float
    timesteps: tuple[float, ...]
    latent_shape: tuple[int, int, int, int]  # (F, C, h, w)
    num_train_timesteps: int
    schedule_shift: float

    @classmethod
    def from_job(cls, config: ODEPairsJobConfig, teacher_model_in_dim: int) -> TeacherSampling:
        platform = config.platform
        gen, geometry = platform.generation, video_geometry(platform)
        sampling = cls(
            num_steps=config.num_steps or gen.teacher_steps,
            shift=config.shift if config.shift is not None else gen.teacher_shift,
            guidance_scale=config.guidance_scale if config.guidance_scale is not None else gen.guidance_scale,
            timesteps=tuple(generator_timesteps(platform)),
            latent_shape=(config.latent_frames or geometry.latent_frames, teacher_model_in_dim,
                          geometry.latent_height, geometry.latent_width),
            num_train_timesteps=platform.schedule.num_train_timesteps, schedule_shift=platform.schedule.shift,
        )
        ode_grid_indices(sampling.timesteps, sampling.num_steps, sampling.schedule, sampling.shift)
        return sampling

    @property
    def schedule(self) -> FlowMatchSchedule:
        return FlowMatchSchedule(self.num_train_timesteps, self.schedule_shift)

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0


class TeacherSampler:
    """A frozen teacher and its sampling settings: (seeds, text, negative) -> ``ODEPairs``."""

    def __init__(self, teacher: nn.Module, sampling: TeacherSampling) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.sampling = sampling

    def sample(self, seeds: list[int], text: torch.Tensor, negative_text: torch.Tensor | None) -> ODEPairs:
        """Trajectories for text [B, L, D]: states [B, K, F, C, h, w], timesteps [K], target [B, F, C, h, w]."""
        s = self.sampling
        p = next(self.teacher.parameters())
        pairs = generate_ode_pairs(
            self.teacher, text.to(p.device, p.dtype), s.latent_shape, seeds, s.schedule, s.timesteps,
            num_steps=s.num_steps, shift=s.shift,
            negative_text=None if negative_text is None or not s.guided else negative_text.to(p.device, p.dtype),
            guidance_scale=s.guidance_scale,
        )
        return ODEPairs(pairs.states.cpu(), pairs.timesteps.cpu(), pairs.target.cpu())


def resolve_teacher(source: TeacherSource, platform: PlatformConfig, tracking_uri: str | None
                    ) -> tuple[str | None, PlatformConfig, dict[str, Any]]:
    """(local generator directory or None for random weights, the teacher's platform config, identity).

    A ``models:/<name>@<alias>`` is pinned to the version it points at now (actors load that version even
    if the alias moves during the job); the identity goes into the dataset's fingerprint.
    """
    if source.uri is None:
        return None, platform, {"random_seed": source.seed}
    resolved = resolve_model(source.uri, tracking_uri)
    identity = {"uri": source.uri, "which": source.which, "version": resolved.version, "run_id": resolved.run_id}
    if not is_model_uri(source.uri):
        identity["path"] = str(Path(source.uri).resolve())
    return str(resolved.path), checkpoint_model_config(resolved.path, platform), identity


def load_teacher(path: str | None, platform: PlatformConfig, source: TeacherSource,
                 device: torch.device) -> nn.Module:
    if path is None:
        return build_dit(platform, device=device, seed=source.seed)
    return load_dit(platform, path, which=source.which, device=device)


class EmbeddingRows:
    """Reads rows of an embeddings dataset by (file, row), keeping the last decoded file in memory
    (a shard's prompts are consecutive rows, so it rarely reads a file twice)."""

    def __init__(self) -> None:
        self._file: str | None = None
        self._table: pa.Table | None = None

    def _rows(self, file: str, rows: list[int]) -> pa.Table:
        if file != self._file:
            self._table, self._file = pq.read_table(file), file
        return self._table.take(rows)

    def get(self, locations: list[tuple[str, int]], negative: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(text [B, L, D], negative text [B, L, D] or None) of the rows at ``locations``, in order."""
        parts, start = [], 0
        while start < len(locations):  # runs of consecutive locations in one file
            end = start
            while end < len(locations) and locations[end][0] == locations[start][0]:
                end += 1
            parts.append(self._rows(locations[start][0], [r for _, r in locations[start:end]]))
            start = end
        table = pa.concat_tables(parts, promote_options="default")
        if not negative:
            table = table.drop_columns([c for c in table.column_names if c.startswith("negative_embedding")])
        batch = embedding_batch(table)
        return batch.text, batch.negative_text


class ODEShardActor(ShardActor):
    """One teacher per actor; a call samples one shard of pairs and writes it."""

    kind = "ode_trajectories"

    def __init__(self, output: str, config: ODEPairsJobConfig, teacher_path: str | None = None,
                 teacher_platform: PlatformConfig | None = None) -> None:
        super().__init__(output)
        platform = teacher_platform or config.platform
        device = resolve_device(config.platform.runtime.device)
        teacher = load_teacher(teacher_path, platform, config.teacher, device)
        self.sampler = TeacherSampler(teacher, TeacherSampling.from_job(config, platform.model.in_dim))
        self.batch_size = config.pool.batch_size
        self.rows = EmbeddingRows()

    def compute(self, task: dict[str, Any]) -> pa.Table:
        pairs = task["pairs"]
        tables = []
        for a in range(0, len(pairs), self.batch_size):
            chunk = pairs[a : a + self.batch_size]
            text, negative = self.rows.get([(p["file"], p["row"]) for p in chunk], self.sampler.sampling.guided)
            seeds = [int(p["seed"]) for p in chunk]
            result = self.sampler.sample(seeds, text, negative)
            tables.append(ode_table(result, pair_indices=[p["pair"] for p in chunk], seeds=seeds,
                                    prompt_ids=[p["prompt_id"] for p in chunk],
                                    prompts=[p["prompt"] for p in chunk], text=text))
        return pa.concat_tables(tables)


@dataclass
class PromptRow:
    """Where one prompt's embedding lives, and what the driver needs to know about it."""

    file: str
    row: int
    id: str
    prompt: str
    has_negative: bool
    length: int
    dim: int


def embedding_index(path: str | Path) -> list[PromptRow]:
    """The prompts of an embeddings dataset in order, read without their embedding bytes."""
    out: list[PromptRow] = []
    for file in dataset_files(path):
        check_schema(file, pq.read_schema(file), "embeddings")
        t = pq.read_table(file, columns=["id", "prompt", "embedding_shape", "max_length",
                                         "negative_embedding_dtype"]).to_pydict()
        for r, (i, p, shape, length, neg) in enumerate(zip(t["id"], t["prompt"], t["embedding_shape"],
                                                              t["max_length"], t["negative_embedding_dtype"],
                                                              strict=True)):
            out.append(PromptRow(str(file.resolve()), r, str(i), str(p), neg is not None, int(length), int(shape[-1])))
    return out


@dataclass
class ODEPlan:
    """Everything decided on the driver before any actor starts."""

    output: Path
    prompts: list[PromptRow]
    num_pairs: int
    seed: int
    shards: list[range]
    teacher_path: str | None
    teacher_platform: PlatformConfig
    fingerprint: dict[str, Any]

    def task(self, index: int) -> dict[str, Any]:
        pairs = []
        for i in self.shards[index]:
            p = self.prompts[i % len(self.prompts)]
            pairs.append({"pair": i, "seed": pair_seed(self.seed, i), "file": p.file, "row": p.row,
                          "prompt_id": p.id, "prompt": p.prompt})
        return {"index": index, "pairs": pairs}


def plan_ode_pairs(config: ODEPairsJobConfig) -> ODEPlan:
    """Validate everything on the driver (teacher grid, text sizes, negatives for guidance), cut shards,
    fingerprint what decides the trajectories."""
    prompts = embedding_index(config.embeddings)
    if not prompts:
        raise ValueError(f"embeddings={config.embeddings!r} holds no prompts")
    path, teacher_platform, identity = resolve_teacher(config.teacher, config.platform, config.tracking.tracking_uri)
    model = teacher_platform.model
    sampling = TeacherSampling.from_job(config, model.in_dim)
    dims = sorted({p.dim for p in prompts})
    lengths = sorted({p.length for p in prompts})
    if dims != [model.text_dim] or lengths[-1] > model.text_len:
        raise ValueError(
            f"embeddings={config.embeddings!r} hold text of widths {dims} and lengths {lengths}; the teacher "
            f"takes width model.text_dim={model.text_dim} and at most model.text_len={model.text_len} tokens"
        )
    lacking = [p.id for p in prompts if not p.has_negative]
    if sampling.guided and lacking:
        raise ValueError(
            f"guidance_scale={sampling.guidance_scale} needs a negative embedding per prompt, but "
            f"{len(lacking)} rows of {config.embeddings!r} have none (ids {lacking[:5]}); encode them with "
            "encode_negative=true, or set guidance_scale=1"
        )
    num_pairs = config.num_pairs or len(prompts)
    sha = hashlib.sha256(json.dumps([[p.id, p.prompt] for p in prompts], ensure_ascii=False).encode())
    fingerprint = {
        "embeddings": str(Path(config.embeddings).resolve()), "prompts_sha256": sha.hexdigest(),
        "teacher": identity, "model": model.model_dump(mode="json"), "dtype": config.platform.runtime.dtype,
        "num_pairs": num_pairs, "seed": config.seed, "shard_size": config.shard_size,
        "sampling": {k: v for k, v in sampling.__dict__.items()},
    }
    return ODEPlan(config.output_dir().resolve(), prompts, num_pairs, config.seed,
                   shard_ranges(num_pairs, config.shard_size), path, teacher_platform, fingerprint)


def ode_pairs(config: ODEPairsJobConfig) -> DataJobResult:
    """Run the ode_pairs job (see the module docstring); returns what it computed and skipped."""
    plan = plan_ode_pairs(config)
    shards = ShardPlan(plan.output, "ode_trajectories", len(plan.shards), plan.num_pairs, plan.fingerprint, plan.task)
    actor_kwargs = {"teacher_path": plan.teacher_path, "teacher_platform": plan.teacher_platform}
    return run_sharded_job(config, "ode_pairs", shards, ODEShardActor, unit="pairs", actor_kwargs=actor_kwargs)

"""Self Forcing (DMD / SiD / GAN; CausVid through the rollout kind) as a step program.

Each rank runs ``WorkerTrainer``: its slice of the global batch rolled out by the generator, dL/dx from a
scoring service, the generator's backward and one optimiser step per training step. Where the scoring
service lives is a ``ScoringBackend``: an actor group in its own processes on Ray
(``distributed.scoring_backend.RayScoring``), or the scoring role in this process (``LocalScoring``, for
single-process runs). Both write the same checkpoint files, so a run may resume under the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ...config import PlatformConfig
from ...diffusion.schedule import FlowMatchSchedule
from ..batches import BatchSource, EmbeddingsSource, RandomSource, ToyWorldSource
from ..ema import EMA
from ..engine_state import load_local_optimizer, load_weights, local_state, read_state, save_state
from ..generator import GeneratorRole
from ..job_config import SelfForcingJobConfig
from ..local import TrainState
from ..loop import LoopContext, TrainedNetwork
from ..networks import load_network, scoring_networks
from ..optim import GuardedOptimizer
from ..reporting import write_sample_video
from ..roles import CriticRole, DiscriminatorRole
from ..scoring_service import SCORING_COUNTERS, SCORING_PREFIX, ScoringService
from ..worker import LocalScoringClient, ScoringClient, WorkerTrainer


def build_source(job: SelfForcingJobConfig) -> BatchSource:
    """The job's global-batch source: random embeddings, the toy world, or a prompt-embeddings dataset."""
    training, data = job.training, job.data
    ro = training.rollout
    frames = ro.loss_window_frames or ro.min_frames
    if data.source == "random":
        return RandomSource(job.platform, training.batch_size, data.num_prompts, frames, data.seed)
    if data.source == "toyworld":
        return ToyWorldSource(job.platform, frames, data.seed)
    section = training.sid if training.objective == "sid" else training.dmd
    guided = training.objective in ("dmd", "sid") and section.guidance_scale != 0
    return EmbeddingsSource(job.platform, data.path, training.batch_size, data.seed, require_negative=guided)


class ScoringBackend(Protocol):
    """Where the critic / discriminator lives, as the generator ranks see it."""

    def start(self, ctx: LoopContext, start_step: int) -> ScoringClient:
        """Build (or reach) the scoring service from the checkpoint the run resumes from; this rank's client."""

    def save_state(self, folder: Path | None) -> None:
        """Its weights, optimiser state and counters into a checkpoint folder (every rank calls)."""

    def export_network(self, path: Path | None) -> None:
        """The trained network's fp32 state dict (every rank calls; ``path`` on rank 0)."""

    def close(self) -> None: ...


class LocalScoring:
    """The scoring role in this process: the service a single-process run talks to directly."""

    def __init__(self, job: SelfForcingJobConfig) -> None:
        self.job = job
        self.role: CriticRole | DiscriminatorRole | None = None
        self.service: ScoringService | None = None

    def start(self, ctx: LoopContext, start_step: int) -> ScoringClient:
        job, training = self.job, self.job.training
        real, trained = scoring_networks(job.models, job.platform, training.objective, training.gan.num_registers,
                                         ctx.device, job.tracking.tracking_uri)
        saved = read_state(ctx.resumed.path, SCORING_PREFIX) if ctx.resumed else None
        if saved is not None:
            load_weights(trained, saved)
        optimizer = GuardedOptimizer(trained.parameters(), training.critic_optim)
        if saved is not None:
            load_local_optimizer(trained, optimizer.optimizer, saved)
            counters = json.loads(ctx.resumed.file(SCORING_COUNTERS).read_text())["optimizer"]
            optimizer.skipped, optimizer.applied = counters["skipped"], counters["applied"]
        sched = job.platform.schedule
        schedule = FlowMatchSchedule(sched.num_train_timesteps, sched.shift)
        if training.objective == "gan":
            self.role = DiscriminatorRole(trained, schedule, training, seed=training.seed, optimizer=optimizer)
        else:
            self.role = CriticRole(real, trained, schedule, training, seed=training.seed, optimizer=optimizer)
        self.service = ScoringService(self.role, ctx.layout.world_size * ctx.layout.accumulation_steps, start_step)
        return LocalScoringClient(self.service)

    def save_state(self, folder: Path | None) -> None:
        if folder is None:
            return
        opt = self.role.optimizer
        save_state(local_state(self.role.network, opt.optimizer), folder, SCORING_PREFIX)
        counters = {"optimizer": {"skipped": opt.skipped, "applied": opt.applied},
                    "updated_through": self.service.updated_through}
        (Path(folder) / SCORING_COUNTERS).write_text(json.dumps(counters))

    def export_network(self, path: Path | None) -> None:
        if path is not None:
            torch.save({k: v.detach().float().cpu().clone() for k, v in self.role.network.state_dict().items()}, path)

    def close(self) -> None:
        return None


class SelfForcingProgram:
    """The generator's Self Forcing steps against a scoring backend."""

    kind = "self_forcing"

    def __init__(self, job: SelfForcingJobConfig, scoring: ScoringBackend) -> None:
        self.job, self.scoring = job, scoring
        self.optim, self.ema = job.training.generator_optim, job.training.ema

    def build_network(self, device: torch.device) -> nn.Module:
        return load_network(self.job.models.generator, self.job.platform, device, self.job.tracking.tracking_uri)

    def start(self, ctx: LoopContext, net: TrainedNetwork, ema: EMA, state: TrainState) -> None:
        job = self.job
        role = GeneratorRole(net.model, job.platform, job.training, ctx.layout.rank, optimizer=net.optimizer,
                             runner=net.runner)
        role.ema = ema  # the loop's EMA: checkpointed and exported by it
        client = self.scoring.start(ctx, state.step)
        self.source = build_source(job)
        self.trainer = WorkerTrainer(role, client, job.training, self.source, ctx.layout, job.overlap, state)

    def train_step(self) -> list[dict[str, float]]:
        return self.trainer.train_step()

    def flush(self) -> list[dict[str, float]]:
        return self.trainer.flush()

    def save_state(self, folder: Path | None) -> None:
        self.scoring.save_state(folder)

    def finish(self, folder: Path | None) -> None:
        self.scoring.export_network(None if folder is None else folder / "scoring.pt")

    def sample_video(self, model: nn.Module, platform: PlatformConfig, path: Path) -> Path | None:
        return write_sample_video(model, platform, self.source.batch(0, [0]).text, path)

    def close(self) -> None:
        self.scoring.close()

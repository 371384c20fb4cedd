"""The generator role: produce training samples with the configured rollout and apply dL/dx to them.

It never sees a scoring network: a step is ``sample`` -> (someone computes dL/dx on ``sample.video``
detached) -> ``apply_gradient``, which back-propagates ``x.backward(dL/dx)`` through the exit steps,
clips, steps AdamW (skipping non-finite steps) and updates the EMA. Which rollout makes the samples is
a registry entry: ``self_forcing`` (own outputs as context, SPEC §4) or ``diffusion_forcing`` (CausVid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import PlatformConfig, video_geometry
from ..diffusion.schedule import FlowMatchSchedule
from ..forcing import (
    GeneratedSample,
    NoiseSource,
    RolloutConfig,
    RolloutPlan,
    diffusion_forcing_sample,
    draw_rollout_plan,
    frames_to_chunks,
    sample_generators,
    sample_seeds,
    self_forcing_rollout,
    step_seed,
)
from ..models.wan_dit import WanDiT
from ..objectives import Conditioning, SampleMeta
from .config import TrainingConfig
from .ema import EMA
from .optim import GuardedOptimizer, RoleOptimizer

ROLLOUT_STREAM = 1  # the per-sample noise stream of generator rollouts (see forcing.sample_seed)


@dataclass
class TrainBatch:
    """One step's inputs: prompt embeddings [B, L, D], the negative prompt's (same shape) and, where the
    objective or rollout needs data, real latents [B, F, C, h, w].

    ``sample_ids`` are the samples' positions in the step's global batch (default 0..B-1: this batch *is*
    the global batch). Every per-sample random draw is a function of (seed, step, sample id), so a worker
    holding samples 4..7 of a batch of 8 draws exactly what a single process holding all 8 draws for them.
    """

    text: torch.Tensor
    negative_text: torch.Tensor | None = None
    real_latents: torch.Tensor | None = None
    sample_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.sample_ids is None:
            self.sample_ids = tuple(range(self.text.shape[0]))
        elif len(self.sample_ids) != self.text.shape[0]:
            raise ValueError(f"{len(self.sample_ids)} sample ids for a batch of {self.text.shape[0]}")
        else:
            self.sample_ids = tuple(int(i) for i in self.sample_ids)

    def conditioning(self) -> Conditioning:
        return Conditioning(self.text, self.negative_text, self.real_latents)


SampleFn = Callable[["GeneratorRole", TrainBatch, int], GeneratedSample]
SAMPLE_SOURCES: dict[str, SampleFn] = {}


def register_sample_source(name: str) -> Callable[[SampleFn], SampleFn]:
    def wrap(fn: SampleFn) -> SampleFn:
        SAMPLE_SOURCES[name] = fn
        return fn

    return wrap


@register_sample_source("self_forcing")
def _self_forcing(role: GeneratorRole, batch: TrainBatch, step: int) -> GeneratedSample:
    text = batch.text.to(role.device, role.dtype)
    return self_forcing_rollout(
        role.runner, text, role.plan(step), role.latent_shape, role.rollout_config, role.schedule,
        NoiseSource(sample_seeds(role.config.seed, step, batch.sample_ids, ROLLOUT_STREAM)),
        window_frames=role.window_frames, sink_frames=role.sink_frames,
    )


@register_sample_source("diffusion_forcing")
def _diffusion_forcing(role: GeneratorRole, batch: TrainBatch, step: int) -> GeneratedSample:
    if batch.real_latents is None:
        raise ValueError("the diffusion_forcing (CausVid) rollout needs batch.real_latents to noise")
    # One generator per sample, so the draws do not depend on how the global batch is split.
    return diffusion_forcing_sample(
        role.runner, batch.real_latents.to(role.device, role.dtype), batch.text.to(role.device, role.dtype),
        list(role.rollout_config.timesteps), role.schedule, role.rollout_config.frames_per_chunk,
        sample_generators(role.config.seed, step, batch.sample_ids, ROLLOUT_STREAM),
        window_frames=role.window_frames, sink_frames=role.sink_frames,
    )


class GeneratorRole:
    """The few-step causal generator with its optimiser and EMA.

    ``model`` is the plain network (its parameter names are what the EMA and exports use); ``runner`` is
    what the rollout calls, the model itself locally or the DeepSpeed engine wrapping it (ZeRO-3 must see
    every forward to gather and accumulate correctly).
    """

    def __init__(
        self, model: WanDiT, platform: PlatformConfig, config: TrainingConfig, rank: int = 0,
        optimizer: RoleOptimizer | None = None, runner: torch.nn.Module | None = None,
    ) -> None:
        if config.rollout.kind not in SAMPLE_SOURCES:
            raise ValueError(f"unknown rollout kind {config.rollout.kind!r}; valid: {sorted(SAMPLE_SOURCES)}")
        self.model = model.train()
        self.runner = runner if runner is not None else self.model
        self.config = config
        self.rank = rank
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        sched = platform.schedule
        self.schedule = FlowMatchSchedule(sched.num_train_timesteps, sched.shift)
        steps = self.schedule.warp_timesteps(sched.denoising_steps) if sched.warp_denoising_steps else sched.denoising_steps
        k = platform.video.frames_per_chunk
        self.rollout_config = RolloutConfig(list(steps), k, sched.context_noise)
        geo = video_geometry(platform)
        self.latent_shape = (platform.model.in_dim, geo.latent_height, geo.latent_width)
        self.window_frames = platform.generation.window_frames
        self.sink_frames = platform.generation.sink_frames
        ro = config.rollout
        self.min_chunks = frames_to_chunks(ro.min_frames, k, "rollout.min_frames")
        self.max_chunks = frames_to_chunks(ro.max_frames, k, "rollout.max_frames")
        self.window_chunks = frames_to_chunks(ro.loss_window_frames or ro.min_frames, k, "rollout.loss_window_frames")
        self.sample_source = SAMPLE_SOURCES[ro.kind]
        self.optimizer = (
            optimizer if optimizer is not None else GuardedOptimizer(model.parameters(), config.generator_optim)
        )
        self.ema = EMA(config.ema)

    @property
    def skipped_steps(self) -> int:
        return self.optimizer.skipped

    def plan(self, step: int) -> RolloutPlan:
        """The step's rollout length and exit steps: a pure function of (seed, step), equal on all ranks."""
        return draw_rollout_plan(
            len(self.rollout_config.timesteps), step_seed(self.config.seed, step),
            self.config.rollout.truncation.mode, self.min_chunks, self.max_chunks, self.window_chunks,
        )

    def sample(self, batch: TrainBatch, step: int) -> GeneratedSample:
        """A training sample (with grad under grad mode, else a critic-step sample without)."""
        return self.sample_source(self, batch, step)

    @staticmethod
    def meta(sample: GeneratedSample, step: int | None = None, batch: TrainBatch | None = None) -> SampleMeta:
        """What to send to a scorer with the detached sample (with ``step`` and ``batch``, the samples'
        identity, from which the scorer draws each sample's noise)."""
        t_to, t_from = sample.denoised_range
        ids = None if batch is None else batch.sample_ids
        return SampleMeta(grad_mask=sample.grad_mask, t_from=t_from, t_to=t_to, step=step, sample_ids=ids)

    def backward(self, sample: GeneratedSample, grad: torch.Tensor) -> None:
        """Accumulate the parameter gradient of one (micro-)batch: d/dtheta of sum(x * dL/dx), which
        back-propagates exactly dL/dx through the exit steps. A non-finite dL/dx is not back-propagated
        by the local optimiser and poisons the step under DeepSpeed; either way the step is skipped."""
        if sample.video.requires_grad:
            g = grad.to(sample.video.device, sample.video.dtype).detach()
            self.optimizer.backward((sample.video * g).sum())

    def finish_step(self, step: int, loss: float | None = None) -> dict[str, float]:
        """The optimiser step over the gradients accumulated since the last one, then the EMA."""
        outcome = self.optimizer.step(loss)
        if outcome.applied:
            with self.optimizer.full_parameters():
                self.ema.update(self.model, step)
        return {"generator_grad_norm": outcome.grad_norm, "generator_skipped": float(not outcome.applied)}

    def apply_gradient(
        self, sample: GeneratedSample, grad: torch.Tensor, step: int, loss: float | None = None
    ) -> dict[str, float]:
        """x.backward(dL/dx), then a guarded AdamW step and the EMA update; returns metrics."""
        self.optimizer.zero_grad()
        self.backward(sample, grad)
        return self.finish_step(step, loss)

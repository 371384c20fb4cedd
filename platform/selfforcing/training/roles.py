"""The scoring roles as plain classes: the critic (DMD / SiD) and the discriminator (GAN).

Each holds its own networks and optimiser, takes detached samples and small dataclasses of tensors, and
returns tensors and dicts of floats, so a later ``ray.remote`` wrapper can host it in another process. The
generator side only ever calls ``score_gradient`` (dL/dx back) and ``update`` (train on the same samples).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule
from ..forcing.self_forcing import sample_generators
from ..objectives import (
    Conditioning,
    Discriminator,
    NoisyDraw,
    SampleMeta,
    ScoreNetworks,
    ScoreResult,
    build_objective,
    discriminator_loss,
    draw_noisy,
    draw_noisy_per_sample,
    flow_matching_loss,
)
from .config import TrainingConfig
from .optim import GuardedOptimizer, RoleOptimizer

# Streams of the per-sample draws (see ``forcing.sample_seed``): scoring and updating draw independently.
SCORE_STREAM = 2
UPDATE_STREAM = 3


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def _to(cond: Conditioning, device: torch.device, dtype: torch.dtype) -> Conditioning:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=dtype)

    return Conditioning(move(cond.text), move(cond.negative_text), move(cond.real_latents))


def _meta_to(meta: SampleMeta | None, device: torch.device) -> SampleMeta | None:
    if meta is None or meta.grad_mask is None:
        return meta
    return replace(meta, grad_mask=meta.grad_mask.to(device))


class _ScoringRole:
    """Shared plumbing: device moves, draws, the injected optimiser.

    Draws: when the ``SampleMeta`` names the step and the samples' global indices, each sample's noise
    comes from (seed, step, index) (``forcing.sample_generators``), so the critic sees the same draws
    however the global batch is split; otherwise from the role's own sequential generator.
    """

    network: nn.Module

    def __init__(
        self, network: nn.Module, config: TrainingConfig, seed: int, optimizer: RoleOptimizer | None = None
    ) -> None:
        self.network = network
        self.config = config
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.optimizer = optimizer if optimizer is not None else GuardedOptimizer(network.parameters(), config.critic_optim)
        self.device, self.dtype = _device_dtype(network)
        self.steps = 0

    def generators(self, meta: SampleMeta | None, stream: int) -> list[torch.Generator] | None:
        """Per-sample generators for an identified batch, else None (use ``self.generator``)."""
        if meta is None or not meta.identified:
            return None
        return sample_generators(self.seed, meta.step, meta.sample_ids, stream)

    @property
    def skipped_steps(self) -> int:
        return self.optimizer.skipped

    def score_gradient(
        self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None = None, draw: NoisyDraw | None = None
    ) -> ScoreResult:
        """dL/dx for a detached sample x [B, F, C, h, w], returned on x's device and dtype."""
        xs = x.detach().to(self.device, self.dtype)
        c = _to(cond, self.device, self.dtype)
        if draw is None:
            draw = self.score_draw(xs, c, meta)
        result = self.scorer.score_gradient(xs, c, _meta_to(meta, self.device), draw)
        return ScoreResult(result.grad.to(x.device, x.dtype), result.metrics)

    def score_draw(self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None) -> NoisyDraw | None:
        """The scoring draw for identified samples (None: the scorer draws from its own generator)."""
        raise NotImplementedError

    def _finish(self, loss: torch.Tensor, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        self.optimizer.zero_grad()
        self.optimizer.backward(loss)
        outcome = self.optimizer.step(loss.detach())
        self.steps += 1
        metrics.update({f"{prefix}_grad_norm": outcome.grad_norm, f"{prefix}_skipped": float(not outcome.applied)})
        return metrics


class CriticRole(_ScoringRole):
    """DMD / SiD: frozen real score (teacher) + trained fake score (critic)."""

    def __init__(
        self, real_score: nn.Module, fake_score: nn.Module, schedule: FlowMatchSchedule, config: TrainingConfig,
        seed: int = 0, optimizer: RoleOptimizer | None = None,
    ) -> None:
        if config.objective not in ("dmd", "sid"):
            raise ValueError(f"CriticRole serves 'dmd' or 'sid', got objective {config.objective!r}")
        real_score.requires_grad_(False).eval()
        fake_score.requires_grad_(True)
        super().__init__(fake_score, config, seed, optimizer)
        self.real_score, self.fake_score, self.schedule = real_score, fake_score, schedule
        self.section = config.dmd if config.objective == "dmd" else config.sid
        self.scorer = build_objective(
            config.objective, ScoreNetworks(real_score=real_score, fake_score=fake_score), schedule,
            self.section, self.generator,
        )

    def draw(self, x: torch.Tensor, meta: SampleMeta | None = None) -> NoisyDraw:
        """Critic-update noise: one t per sample (shifted uniform, clamped), fresh noise."""
        gens = self.generators(meta, UPDATE_STREAM)
        if gens is None:
            return draw_noisy(x, self.schedule, self.generator, self.section.min_t, self.section.max_t)
        return draw_noisy_per_sample(x, self.schedule, gens, self.section.min_t, self.section.max_t)

    def score_draw(self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None) -> NoisyDraw | None:
        gens = self.generators(meta, SCORE_STREAM)
        if gens is None:
            return None
        ts = getattr(self.section, "ts_schedule", False)
        return draw_noisy_per_sample(x, self.schedule, gens, self.section.min_t, self.section.max_t, meta, ts)

    def denoising_loss(self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw) -> torch.Tensor:
        """Flow-matching loss of the fake score on generated samples x [B, F, C, h, w] (bidirectional)."""
        xs = x.detach().to(self.device, self.dtype)
        c = _to(cond, self.device, self.dtype)
        return flow_matching_loss(self.fake_score, xs, c.text, draw.t.to(self.device), draw.noise.to(xs), self.schedule)

    def update(
        self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw | None = None, meta: SampleMeta | None = None
    ) -> dict[str, float]:
        """One critic step on detached generated samples; returns metrics (skipped steps counted)."""
        xs = x.detach().to(self.device, self.dtype)
        draw = draw if draw is not None else self.draw(xs, meta)
        loss = self.denoising_loss(xs, cond, draw)
        return self._finish(loss, {"critic_loss": float(loss.detach())}, "critic")


class DiscriminatorRole(_ScoringRole):
    """GAN: discriminator (critic backbone + classification head) on noisy real vs generated latents."""

    def __init__(
        self, discriminator: Discriminator, schedule: FlowMatchSchedule, config: TrainingConfig, seed: int = 0,
        optimizer: RoleOptimizer | None = None, scoring_network: nn.Module | None = None,
    ) -> None:
        """``scoring_network`` is what dL/dx is taken through (default: ``discriminator``). Under DeepSpeed
        the engine trains and its plain module scores: a backward through the engine's forward runs the
        engine's gradient-reduction epilogue, which an input-only gradient must not trigger."""
        discriminator.requires_grad_(True)
        super().__init__(discriminator, config, seed, optimizer)
        self.discriminator, self.schedule = discriminator, schedule
        self.scorer = build_objective(
            "gan", ScoreNetworks(discriminator=scoring_network or discriminator), schedule, config.gan,
            self.generator,
        )

    def draw(self, x: torch.Tensor, real: torch.Tensor, meta: SampleMeta | None = None) -> NoisyDraw:
        """Discriminator-update noise for generated x and real latents (+ R1/R2 perturbations)."""
        gan = self.config.gan
        perturb = gan.r1_weight > 0 or gan.r2_weight > 0
        gens = self.generators(meta, UPDATE_STREAM)
        if gens is None:
            return draw_noisy(x, self.schedule, self.generator, gan.min_t, gan.max_t, real=real, perturb=perturb)
        return draw_noisy_per_sample(x, self.schedule, gens, gan.min_t, gan.max_t, real=real, perturb=perturb)

    def score_draw(self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None) -> NoisyDraw | None:
        gens = self.generators(meta, SCORE_STREAM)
        if gens is None:
            return None
        gan = self.config.gan
        return draw_noisy_per_sample(x, self.schedule, gens, gan.min_t, gan.max_t, real=cond.real_latents)

    def loss(self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw) -> tuple[torch.Tensor, dict[str, float]]:
        gan = self.config.gan
        c = _to(cond, self.device, self.dtype)
        return discriminator_loss(
            self.discriminator, x.detach().to(self.device, self.dtype), c.real_latents, c.text, draw, self.schedule,
            relativistic=gan.relativistic, weight=gan.discriminator_weight, r1_weight=gan.r1_weight,
            r2_weight=gan.r2_weight, sigma=gan.r_sigma,
        )

    def update(
        self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw | None = None, meta: SampleMeta | None = None
    ) -> dict[str, float]:
        """One discriminator step on detached generated x and ``cond.real_latents``."""
        if cond.real_latents is None:
            raise ValueError("the discriminator update needs cond.real_latents")
        xs = x.detach().to(self.device, self.dtype)
        draw = draw if draw is not None else self.draw(xs, cond.real_latents.to(self.device, self.dtype), meta)
        loss, metrics = self.loss(xs, cond, draw)
        return self._finish(loss, metrics, "discriminator")

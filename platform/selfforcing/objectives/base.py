"""What every distribution-matching objective shares: inputs, noise draws and the sample gradient.

An objective is a *scorer*: given a detached generator sample x it returns dL/dx (and metrics), never
touching the generator. The generator then back-propagates that gradient (``x.backward(grad)``, or the
equivalent ``surrogate_loss``), which equals computing the loss in one autograd graph by the chain rule.
This is what lets the scoring networks live in another process (DESIGN: critic actors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..diffusion.schedule import FlowMatchSchedule


@dataclass
class Conditioning:
    """Per-sample conditioning: prompt embeddings [B, L, D], the negative prompt's (CFG's
    unconditional branch) and, for GAN, real video latents [B, F, C, h, w]."""

    text: torch.Tensor
    negative_text: torch.Tensor | None = None
    real_latents: torch.Tensor | None = None


@dataclass
class SampleMeta:
    """What the rollout tells the losses: frames whose gradient counts ``grad_mask`` [B, F] (None = all),
    the noise range [t_to, t_from] the sample was denoised in (for ``ts_schedule``), and which samples
    these are: the training ``step`` and each sample's index in the step's global batch. With those, a
    scoring role draws each sample's noise from (seed, step, index), so the draws do not depend on how
    the global batch is split over workers, micro-batches or critic actors."""

    grad_mask: torch.Tensor | None = None
    t_from: float | None = None
    t_to: float | None = None
    step: int | None = None
    sample_ids: tuple[int, ...] | None = None

    @property
    def identified(self) -> bool:
        return self.step is not None and self.sample_ids is not None


@dataclass
class NoisyDraw:
    """The randomness of one scoring call, explicit so a single-graph reference can replay it.

    t [B, F] raw timesteps (one value per sample, repeated over frames); noise like x; ``real_noise``
    like the real latents (GAN); ``perturb_real`` / ``perturb_fake`` unit Gaussians for R1 / R2.
    """

    t: torch.Tensor
    noise: torch.Tensor
    real_noise: torch.Tensor | None = None
    perturb_real: torch.Tensor | None = None
    perturb_fake: torch.Tensor | None = None


@dataclass
class ScoreResult:
    """dL/dx (same shape as x) and scalar metrics; unpacks as ``grad, metrics = result``."""

    grad: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        return iter((self.grad, self.metrics))


class Scorer(Protocol):
    """The interface the generator side sees."""

    def score_gradient(
        self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None = None, draw: NoisyDraw | None = None
    ) -> ScoreResult: ...


def draw_timesteps(
    batch: int,
    frames: int,
    schedule: FlowMatchSchedule,
    generator: torch.Generator,
    min_t: float,
    max_t: float,
    t_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One t per sample, shared by its frames -> [B, F]: uniform, shifted, clamped to [min_t, max_t].

    With ``t_range`` = (lo, hi) the uniform draw is restricted to [lo, hi] / T before shifting (the
    release's ``ts_schedule``); otherwise it covers [0, T].
    """
    if t_range is None:
        t = schedule.sample_timesteps((batch,), generator, min_t=min_t, max_t=max_t)
    else:
        lo, hi = (r / schedule.num_train_timesteps for r in t_range)
        u = lo + (hi - lo) * torch.rand((batch,), generator=generator, dtype=torch.float64)
        t = schedule.timestep(schedule.shift_sigma(u)).clamp(min_t, max_t).float()
    return t[:, None].expand(batch, frames).contiguous()


def draw_noisy(
    x: torch.Tensor,
    schedule: FlowMatchSchedule,
    generator: torch.Generator,
    min_t: float,
    max_t: float,
    meta: SampleMeta | None = None,
    ts_schedule: bool = False,
    real: torch.Tensor | None = None,
    perturb: bool = False,
) -> NoisyDraw:
    """Draw t and noise for x [B, F, C, h, w] on the CPU generator (device independent), then move."""
    t_range = None
    if ts_schedule and meta is not None and meta.t_from is not None and meta.t_to is not None:
        t_range = (meta.t_to, meta.t_from)
    t = draw_timesteps(x.shape[0], x.shape[1], schedule, generator, min_t, max_t, t_range)

    def gauss(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=torch.float64).to(like.device, like.dtype)

    return NoisyDraw(
        t=t.to(x.device),
        noise=gauss(x),
        real_noise=None if real is None else gauss(real),
        perturb_real=gauss(real) if perturb and real is not None else None,
        perturb_fake=gauss(x) if perturb else None,
    )


def draw_noisy_per_sample(
    x: torch.Tensor,
    schedule: FlowMatchSchedule,
    generators: list[torch.Generator],
    min_t: float,
    max_t: float,
    meta: SampleMeta | None = None,
    ts_schedule: bool = False,
    real: torch.Tensor | None = None,
    perturb: bool = False,
) -> NoisyDraw:
    """``draw_noisy`` with one generator per sample: sample b's t and noise come from ``generators[b]``
    only, so any split of a batch into parts draws exactly what the whole batch would."""
    if len(generators) != x.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
    parts = [
        draw_noisy(
            x[b : b + 1], schedule, g, min_t, max_t, meta, ts_schedule,
            real=None if real is None else real[b : b + 1], perturb=perturb,
        )
        for b, g in enumerate(generators)
    ]

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return NoisyDraw(t=cat("t"), noise=cat("noise"), real_noise=cat("real_noise"),
                     perturb_real=cat("perturb_real"), perturb_fake=cat("perturb_fake"))


def mask_weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Element weights [B, F, 1, 1, 1] that turn a sum into the mean over unmasked elements of ``like``."""
    if mask is None:
        mask = torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"grad_mask must be [B, F] = {tuple(like.shape[:2])}, got {tuple(mask.shape)}")
    per_frame = like[0, 0].numel()
    count = int(mask.sum()) * per_frame
    if count == 0:
        raise ValueError("grad_mask excludes every frame; nothing to score")
    return (mask.to(like.dtype) / count)[:, :, None, None, None]


def per_sample_mean_abs(d: torch.Tensor) -> torch.Tensor:
    """mean |d| over all but the batch dimension -> [B, 1, 1, 1, 1] (the DMD / SiD normaliser)."""
    return d.abs().mean(dim=tuple(range(1, d.ndim)), keepdim=True)


def surrogate_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 ||x - stopgrad(x - grad)||^2: a scalar whose gradient w.r.t. x is exactly ``grad``."""
    return 0.5 * (x - (x - grad.to(x.dtype)).detach()).pow(2).sum()


def metric(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)

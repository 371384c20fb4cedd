"""Adversarial objective on noisy latents (SPEC §4): generator scorer and discriminator loss.

Generator: L_G = w_g * mean softplus(-D(x_t)) (standard) or softplus(-(D(x_t) - D(r_t))) (relativistic),
with x_t, r_t the generated and real latents noised to the same t. Its dL/dx comes from autograd through
the discriminator *w.r.t. its input only* (the discriminator's parameters receive nothing). Frames outside
the grad mask get zero gradient (a stop-gradient on them).
Discriminator: softplus(-D(r_t)) + softplus(D(x_t)) (or relativistic softplus(-(D(r_t) - D(x_t)))), plus
R1 / R2 penalties w * mean(((D(y + sigma n) - D(y)) / sigma)^2) on real / generated inputs: a
finite-difference estimate of the input-gradient norm along a random direction (release, sigma = 0.01).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule
from .base import Conditioning, NoisyDraw, SampleMeta, ScoreResult, draw_noisy
from .registry import ScoreNetworks, register_objective


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for the softplus (bf16 logits), float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def generator_gan_loss(fake_logit: torch.Tensor, real_logit: torch.Tensor | None, relativistic: bool) -> torch.Tensor:
    """Non-saturating generator loss from logits [B] (real logits only for the relativistic form)."""
    if relativistic:
        if real_logit is None:
            raise ValueError("the relativistic GAN loss needs the real logits")
        return F.softplus(-_wide(fake_logit - real_logit)).mean()
    return F.softplus(-_wide(fake_logit)).mean()


def discriminator_gan_loss(fake_logit: torch.Tensor, real_logit: torch.Tensor, relativistic: bool) -> torch.Tensor:
    if relativistic:
        return F.softplus(-_wide(real_logit - fake_logit)).mean()
    return F.softplus(-_wide(real_logit)).mean() + F.softplus(_wide(fake_logit)).mean()


def finite_difference_penalty(
    discriminator: nn.Module, y_t: torch.Tensor, logit: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
    direction: torch.Tensor, sigma: float,
) -> torch.Tensor:
    """mean(((D(y_t + sigma n) - D(y_t)) / sigma)^2): R1 (real y) or R2 (generated y) without double backward."""
    perturbed = discriminator(y_t + sigma * direction, t, text)
    return ((perturbed - logit) / sigma).pow(2).mean()


class GANScorer:
    """Generator-side GAN scorer; needs ``cond.real_latents`` for the relativistic form."""

    def __init__(
        self,
        discriminator: nn.Module,
        schedule: FlowMatchSchedule,
        relativistic: bool = False,
        generator_weight: float = 0.01,
        min_t: float = 20.0,
        max_t: float = 980.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.discriminator = discriminator
        self.schedule = schedule
        self.relativistic = relativistic
        self.generator_weight = generator_weight
        self.min_t, self.max_t = min_t, max_t
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def draw(self, x: torch.Tensor, real: torch.Tensor | None = None, perturb: bool = False) -> NoisyDraw:
        return draw_noisy(x, self.schedule, self.generator, self.min_t, self.max_t, real=real, perturb=perturb)

    def score_gradient(
        self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None = None, draw: NoisyDraw | None = None
    ) -> ScoreResult:
        """dL_G/dx for a detached sample x [B, F, C, h, w]."""
        real = cond.real_latents
        if self.relativistic and real is None:
            raise ValueError("relativistic GAN scoring needs cond.real_latents")
        draw = draw if draw is not None else self.draw(x, real)
        t = draw.t
        real_logit = None
        if self.relativistic:
            with torch.no_grad():
                real_t = self.schedule.add_noise(real.to(x.dtype), draw.real_noise, t)
                real_logit = self.discriminator(real_t, t, cond.text)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            fake_logit = self.discriminator(self.schedule.add_noise(xg, draw.noise, t), t, cond.text)
            loss = self.generator_weight * generator_gan_loss(fake_logit, real_logit, self.relativistic)
            (grad,) = torch.autograd.grad(loss, [xg])
        if meta is not None and meta.grad_mask is not None:
            grad = grad * meta.grad_mask.to(grad.dtype)[:, :, None, None, None]
        metrics = {"gan_g_loss": float(loss.detach()), "d_fake_logit": float(fake_logit.detach().mean())}
        return ScoreResult(torch.nan_to_num(grad), metrics)


def discriminator_loss(
    discriminator: nn.Module,
    fake: torch.Tensor,
    real: torch.Tensor,
    text: torch.Tensor,
    draw: NoisyDraw,
    schedule: FlowMatchSchedule,
    relativistic: bool = False,
    weight: float = 1.0,
    r1_weight: float = 0.0,
    r2_weight: float = 0.0,
    sigma: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Discriminator loss on detached generated latents ``fake`` and real latents [B, F, C, h, w].

    Both are noised to the same t (``draw.t``); real and generated go through one batched forward.
    """
    t = draw.t
    fake_t = schedule.add_noise(fake.detach(), draw.noise, t)
    real_t = schedule.add_noise(real.to(fake.dtype), draw.real_noise, t)
    logits = discriminator(torch.cat([fake_t, real_t]), torch.cat([t, t]), torch.cat([text, text]))
    fake_logit, real_logit = logits.chunk(2)
    loss = weight * discriminator_gan_loss(fake_logit, real_logit, relativistic)
    metrics = {"gan_d_loss": float(loss.detach()), "d_real_logit": float(real_logit.detach().mean()),
               "d_fake_logit": float(fake_logit.detach().mean())}
    if r1_weight > 0:
        r1 = finite_difference_penalty(discriminator, real_t, real_logit, t, text, draw.perturb_real, sigma)
        loss = loss + r1_weight * r1
        metrics["r1"] = float(r1.detach())
    if r2_weight > 0:
        r2 = finite_difference_penalty(discriminator, fake_t, fake_logit, t, text, draw.perturb_fake, sigma)
        loss = loss + r2_weight * r2
        metrics["r2"] = float(r2.detach())
    return loss, metrics


@register_objective("gan")
def _build_gan(networks: ScoreNetworks, schedule: FlowMatchSchedule, config, generator=None) -> GANScorer:
    return GANScorer(
        networks.require("discriminator", "gan"), schedule, relativistic=config.relativistic,
        generator_weight=config.generator_weight, min_t=config.min_t, max_t=config.max_t, generator=generator,
    )

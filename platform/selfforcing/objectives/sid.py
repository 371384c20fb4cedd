"""Score identity distillation (Fisher divergence, SPEC §4) as a sample-gradient scorer.

Per element, with normaliser n = mean|x - x0_real| (per sample, no grad):
    l = (x0_real - x0_fake) * ((x0_real - x) - alpha (x0_real - x0_fake)) / n,   L = mean over unmasked l.
As in the release, the scores are evaluated at a *detached* noisy sample, so x enters L only through the
explicit ``x0_real - x`` term and dL/dx = -(x0_real - x0_fake) / n * mask / count; alpha changes the loss
value (a metric) but not the gradient.
"""

from __future__ import annotations

import torch

from ..diffusion.schedule import FlowMatchSchedule
from .base import ScoreResult, mask_weights, per_sample_mean_abs
from .dmd import DMDScorer
from .registry import ScoreNetworks, register_objective


def sid_loss_terms(
    x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-element SiD loss l, normaliser [B,1,1,1,1]) for tensors [B, F, C, h, w]; differentiable in x."""
    normaliser = per_sample_mean_abs(x.detach() - x0_real)
    diff = x0_real - x0_fake
    return torch.nan_to_num(diff * ((x0_real - x) - alpha * diff) / normaliser), normaliser


def sid_gradient(
    x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, alpha: float = 1.0,
    mask: torch.Tensor | None = None,
) -> ScoreResult:
    """dL/dx of the SiD loss (and its value) for a detached x; mask [B, F] or None."""
    ct = torch.promote_types(x.dtype, torch.float32)
    x, x0_fake, x0_real = x.to(ct), x0_fake.to(ct), x0_real.to(ct)
    terms, normaliser = sid_loss_terms(x, x0_fake, x0_real, alpha)
    w = mask_weights(mask, x)
    grad = torch.nan_to_num(-(x0_real - x0_fake) / normaliser) * w
    return ScoreResult(grad, {"sid_loss": float((terms * w).sum()), "sid_normaliser": float(normaliser.mean())})


class SiDScorer(DMDScorer):
    """Same networks and noising as DMD; only the loss differs."""

    def __init__(self, *args, alpha: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha

    def gradient(
        self, x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, mask: torch.Tensor | None
    ) -> ScoreResult:
        return sid_gradient(x, x0_fake, x0_real, self.alpha, mask)


@register_objective("sid")
def _build_sid(networks: ScoreNetworks, schedule: FlowMatchSchedule, config, generator=None) -> SiDScorer:
    return SiDScorer(
        networks.require("real_score", "sid"), networks.require("fake_score", "sid"), schedule,
        guidance_scale=config.guidance_scale, min_t=config.min_t, max_t=config.max_t,
        generator=generator, alpha=config.alpha,
    )

"""Distribution matching distillation (reverse KL, SPEC §4) as a sample-gradient scorer.

grad = (x0_fake - x0_real) / mean|x - x0_real| (per sample), NaNs zeroed; the generator loss is
0.5 * mean over unmasked elements of ||x - stopgrad(x - grad)||^2, whose gradient w.r.t. x is
grad * mask / count. Neither score needs gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.schedule import FlowMatchSchedule
from .base import (
    Conditioning,
    NoisyDraw,
    SampleMeta,
    ScoreResult,
    draw_noisy,
    mask_weights,
    per_sample_mean_abs,
)
from .registry import ScoreNetworks, register_objective
from .scores import guided_x0, x0_prediction


def dmd_gradient(
    x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, mask: torch.Tensor | None = None
) -> ScoreResult:
    """dL/dx of the DMD loss for x, x0_fake, x0_real [B, F, C, h, w] and grad_mask [B, F] (or None).

    Descending it moves x from the fake score's prediction toward the real one.
    """
    ct = torch.promote_types(x.dtype, torch.float32)
    x, x0_fake, x0_real = x.to(ct), x0_fake.to(ct), x0_real.to(ct)
    normaliser = per_sample_mean_abs(x - x0_real)
    g = torch.nan_to_num((x0_fake - x0_real) / normaliser)
    w = mask_weights(mask, x)
    loss = 0.5 * (g.pow(2) * w).sum()
    metrics = {
        "dmd_loss": float(loss),
        "dmd_grad_norm": float(g.norm()),
        "dmd_normaliser": float(normaliser.mean()),
    }
    return ScoreResult(g * w, metrics)


class DMDScorer:
    """Real score (frozen teacher, CFG) vs fake score (the trained critic, no CFG)."""

    def __init__(
        self,
        real_score: nn.Module,
        fake_score: nn.Module,
        schedule: FlowMatchSchedule,
        guidance_scale: float = 3.0,
        min_t: float = 20.0,
        max_t: float = 980.0,
        ts_schedule: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.real_score = real_score
        self.fake_score = fake_score
        self.schedule = schedule
        self.guidance_scale = guidance_scale
        self.min_t, self.max_t = min_t, max_t
        self.ts_schedule = ts_schedule
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def predictions(self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_fake, x0_real) at the drawn noise level, without grad."""
        with torch.no_grad():
            x_t = self.schedule.add_noise(x, draw.noise, draw.t)
            fake = x0_prediction(self.fake_score, x_t, draw.t, cond.text, self.schedule)
            real = guided_x0(
                self.real_score, x_t, draw.t, cond.text, cond.negative_text, self.guidance_scale, self.schedule
            )
        return fake, real

    def gradient(
        self, x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor, mask: torch.Tensor | None
    ) -> ScoreResult:
        """The loss's dL/dx given both scores' predictions (what SiD changes)."""
        return dmd_gradient(x, x0_fake, x0_real, mask)

    def draw(self, x: torch.Tensor, meta: SampleMeta | None = None) -> NoisyDraw:
        return draw_noisy(x, self.schedule, self.generator, self.min_t, self.max_t, meta, self.ts_schedule)

    def score_gradient(
        self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None = None, draw: NoisyDraw | None = None
    ) -> ScoreResult:
        """dL/dx for a detached sample x [B, F, C, h, w]."""
        x = x.detach()
        draw = draw if draw is not None else self.draw(x, meta)
        fake, real = self.predictions(x, cond, draw)
        result = self.gradient(x, fake, real, None if meta is None else meta.grad_mask)
        result.grad = result.grad.to(x.dtype)
        result.metrics["score_t_mean"] = float(draw.t.float().mean())
        return result


@register_objective("dmd")
def _build_dmd(networks: ScoreNetworks, schedule: FlowMatchSchedule, config, generator=None) -> DMDScorer:
    return DMDScorer(
        networks.require("real_score", "dmd"), networks.require("fake_score", "dmd"), schedule,
        guidance_scale=config.guidance_scale, min_t=config.min_t, max_t=config.max_t,
        ts_schedule=config.ts_schedule, generator=generator,
    )

"""Distribution-matching objectives as sample gradients (DMD, SiD, GAN) and the regression losses
(critic denoising, ODE initialisation). Objectives register by name: ``build_objective(name, ...)``."""

from .base import (
    Conditioning,
    NoisyDraw,
    SampleMeta,
    Scorer,
    ScoreResult,
    draw_noisy,
    draw_noisy_per_sample,
    draw_timesteps,
    mask_weights,
    surrogate_loss,
)
from .denoising import flow_matching_loss
from .discriminator import ClassifierHead, Discriminator
from .dmd import DMDScorer, dmd_gradient
from .gan import GANScorer, discriminator_gan_loss, discriminator_loss, generator_gan_loss
from .ode_regression import draw_state_indices, ode_regression_loss
from .registry import OBJECTIVES, ScoreNetworks, build_objective, objective_names, register_objective
from .scores import guided_x0, x0_prediction
from .sid import SiDScorer, sid_gradient, sid_loss_terms

__all__ = [
    "OBJECTIVES",
    "ClassifierHead",
    "Conditioning",
    "DMDScorer",
    "Discriminator",
    "GANScorer",
    "NoisyDraw",
    "SampleMeta",
    "ScoreNetworks",
    "ScoreResult",
    "Scorer",
    "SiDScorer",
    "build_objective",
    "discriminator_gan_loss",
    "discriminator_loss",
    "dmd_gradient",
    "draw_noisy",
    "draw_noisy_per_sample",
    "draw_state_indices",
    "draw_timesteps",
    "flow_matching_loss",
    "generator_gan_loss",
    "guided_x0",
    "mask_weights",
    "objective_names",
    "ode_regression_loss",
    "register_objective",
    "sid_gradient",
    "sid_loss_terms",
    "surrogate_loss",
    "x0_prediction",
]

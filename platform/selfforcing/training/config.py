"""Typed training configuration (SPEC §4-5). Defaults are the Self Forcing release's hyperparameters.

Kept next to the training code rather than in ``config/schema.py``: only training jobs read it, and the
generation config stays small. ``training_preset(name)`` gives the release's named setups (DMD, SiD, GAN,
CausVid, ODE initialisation) as starting points that YAML / CLI overrides refine.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config.schema import StrictModel


class OptimConfig(StrictModel):
    """AdamW for one role (generator, critic or discriminator)."""

    lr: float = Field(2e-6, gt=0, description="learning rate")
    betas: tuple[float, float] = Field((0.0, 0.999), description="AdamW betas; the release uses beta1 = 0")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (torch's AdamW default)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float | None = Field(10.0, gt=0, description="clip the global grad norm (None = no clip)")


class EMAConfig(StrictModel):
    """Exponential moving average of the generator's weights (what is served)."""

    decay: float = Field(0.99, ge=0, lt=1, description="EMA decay per generator step")
    start_step: int = Field(200, ge=0, description="training step at which the EMA is created (copied)")


class TruncationConfig(StrictModel):
    """Stochastic gradient truncation of the Self Forcing rollout."""

    mode: Literal["shared", "per_chunk", "last"] = Field(
        "shared", description="exit step drawn once for all chunks, per chunk, or always the last step"
    )


class RolloutTrainingConfig(StrictModel):
    """Which generator rollout produces training samples and how long it is."""

    kind: Literal["self_forcing", "diffusion_forcing"] = Field(
        "self_forcing", description="self_forcing (own outputs as context) or diffusion_forcing (CausVid)"
    )
    min_frames: int = Field(21, gt=0, description="fewest latent frames per rollout (a chunk multiple)")
    max_frames: int = Field(21, gt=0, description="most latent frames per rollout (a chunk multiple)")
    loss_window_frames: int | None = Field(
        None, gt=0, description="latent frames the loss sees (the last ones); None = min_frames"
    )
    truncation: TruncationConfig = Field(default_factory=TruncationConfig, description="exit-step draws")

    @model_validator(mode="after")
    def _ordered(self) -> RolloutTrainingConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames={self.min_frames} must be <= max_frames={self.max_frames}")
        if self.loss_window_frames is not None and self.loss_window_frames > self.min_frames:
            raise ValueError(
                f"loss_window_frames={self.loss_window_frames} must be <= min_frames={self.min_frames}"
            )
        return self


class DMDConfig(StrictModel):
    """Distribution matching distillation (reverse KL) scorer."""

    guidance_scale: float = Field(3.0, description="real score CFG: x0 = c + g (c - u); g=3 is CFG 4")
    min_t: float = Field(20.0, ge=0, description="lowest scoring timestep (0.02 * 1000)")
    max_t: float = Field(980.0, le=1000, description="highest scoring timestep (0.98 * 1000)")
    ts_schedule: bool = Field(False, description="draw t within the exit step's [t_to, t_from] range")


class SiDConfig(StrictModel):
    """Score identity distillation (Fisher divergence) scorer."""

    alpha: float = Field(1.0, description="SiD alpha weighting the fake-real difference term")
    guidance_scale: float = Field(3.0, description="real score CFG, as for DMD")
    min_t: float = Field(20.0, ge=0, description="lowest scoring timestep")
    max_t: float = Field(980.0, le=1000, description="highest scoring timestep")


class GANConfig(StrictModel):
    """Adversarial objective on noisy latents with a head on the critic backbone."""

    relativistic: bool = Field(False, description="relativistic pairing D(fake) - D(real) instead of standard")
    generator_weight: float = Field(0.01, ge=0, description="scale of the generator's softplus loss")
    discriminator_weight: float = Field(1.0, ge=0, description="scale of the discriminator's loss")
    r1_weight: float = Field(0.0, ge=0, description="R1 penalty on real inputs (finite differences)")
    r2_weight: float = Field(0.0, ge=0, description="R2 penalty on generated inputs (finite differences)")
    r_sigma: float = Field(0.01, gt=0, description="perturbation scale of the finite-difference R1/R2")
    num_registers: int = Field(1, gt=0, description="learned pooling queries of the classification head")
    min_t: float = Field(20.0, ge=0, description="lowest noising timestep")
    max_t: float = Field(980.0, le=1000, description="highest noising timestep")


class TrainingConfig(StrictModel):
    """One training run: objective, roles' optimisers, schedule of updates, EMA, rollout."""

    objective: Literal["dmd", "sid", "gan"] = Field("dmd", description="distribution-matching objective")
    generator_optim: OptimConfig = Field(default_factory=OptimConfig, description="generator AdamW")
    critic_optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=4e-7), description="critic / discriminator AdamW"
    )
    critic_steps_per_generator_step: int = Field(5, gt=0, description="generator updated every N steps")
    ema: EMAConfig = Field(default_factory=EMAConfig, description="generator EMA")
    rollout: RolloutTrainingConfig = Field(default_factory=RolloutTrainingConfig, description="samples")
    dmd: DMDConfig = Field(default_factory=DMDConfig, description="DMD settings")
    sid: SiDConfig = Field(default_factory=SiDConfig, description="SiD settings")
    gan: GANConfig = Field(default_factory=GANConfig, description="GAN settings")
    batch_size: int = Field(64, gt=0, description="samples per step over all ranks")
    max_steps: int = Field(600, gt=0, description="training steps")
    seed: int = Field(0, description="base seed; step draws use (seed, step) so every rank agrees")


TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "self_forcing_dmd": {},
    "self_forcing_sid": {"objective": "sid", "critic_optim": {"lr": 2e-6}},
    "self_forcing_gan": {"objective": "gan", "critic_steps_per_generator_step": 1, "batch_size": 768},
    "causvid_dmd": {"rollout": {"kind": "diffusion_forcing"}},
}


def training_preset(name: str, **overrides: Any) -> TrainingConfig:
    """The release's named setup, with top-level field overrides."""
    if name not in TRAINING_PRESETS:
        raise ValueError(f"unknown training preset {name!r}; valid: {sorted(TRAINING_PRESETS)}")
    return TrainingConfig(**{**TRAINING_PRESETS[name], **overrides})

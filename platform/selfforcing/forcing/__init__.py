"""Rollouts: the shared autoregressive loop, Self Forcing (truncation), Teacher / Diffusion Forcing."""

from .diffusion_forcing import diffusion_forcing_loss, diffusion_forcing_sample, per_chunk_timesteps
from .ode_init import ODEPairs, generate_ode_pairs, ode_grid_indices
from .rollout import ChunkOutput, NoiseSource, RolloutConfig, rollout, write_context
from .self_forcing import (
    TRUNCATION_MODES,
    GeneratedSample,
    RolloutPlan,
    TruncationPlan,
    draw_rollout_plan,
    frames_to_chunks,
    sample_generators,
    sample_seed,
    sample_seeds,
    seeded_generator,
    self_forcing_rollout,
    step_seed,
)
from .teacher_forcing import teacher_forcing_inputs, teacher_forcing_loss

__all__ = [
    "ChunkOutput",
    "NoiseSource",
    "RolloutConfig",
    "rollout",
    "write_context",
    # Self Forcing and the baselines
    "TRUNCATION_MODES",
    "GeneratedSample",
    "ODEPairs",
    "RolloutPlan",
    "TruncationPlan",
    "diffusion_forcing_loss",
    "diffusion_forcing_sample",
    "draw_rollout_plan",
    "frames_to_chunks",
    "generate_ode_pairs",
    "ode_grid_indices",
    "per_chunk_timesteps",
    "sample_generators",
    "sample_seed",
    "sample_seeds",
    "seeded_generator",
    "self_forcing_rollout",
    "step_seed",
    "teacher_forcing_inputs",
    "teacher_forcing_loss",
]

"""Rollouts: the shared autoregressive loop, Self Forcing (truncation), Teacher / Diffusion Forcing."""

from .rollout import ChunkOutput, NoiseSource, RolloutConfig, rollout, write_context

__all__ = ["ChunkOutput", "NoiseSource", "RolloutConfig", "rollout", "write_context"]

"""Flow matching with a shifted schedule (SPEC §2).

x_t = (1 - sigma) x0 + sigma eps, the network predicts v = eps - x0, timestep t = 1000 sigma. All
conversions broadcast per-frame timesteps [B, F] over latents [B, F, C, H, W].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Timesteps [B, F] / [B] / scalar -> broadcastable against ``like`` [B, F, ...]."""
    t = torch.as_tensor(t, device=like.device)
    while t.ndim < like.ndim:
        t = t[..., None]
    return t


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """At least float32 (bf16 latents), float64 kept for exact tests."""
    return torch.promote_types(x.dtype, torch.float32)


class FlowMatchSchedule:
    """Shifted flow-matching schedule: sigma' = s sigma / (1 + (s - 1) sigma)."""

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 5.0) -> None:
        if shift <= 0:
            raise ValueError(f"shift={shift} must be > 0")
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift

    # ------------------------------------------------------------------ sigma <-> timestep
    def shift_sigma(self, sigma):
        s = self.shift
        return s * sigma / (1 + (s - 1) * sigma)

    def sigma(self, t):
        return t / self.num_train_timesteps

    def timestep(self, sigma):
        return sigma * self.num_train_timesteps

    def warp_timesteps(self, steps: Sequence[float]) -> list[float]:
        """Map a step list onto the shifted grid: t -> T * shift(t / T).

        This equals indexing the 1000-step shifted training grid at the same position, which is how
        the Self Forcing release warps [1000, 750, 500, 250] into [1000, 937.5, 833.3, 625] at shift 5.
        """
        return [float(self.timestep(self.shift_sigma(self.sigma(float(t))))) for t in steps]

    def sample_timesteps(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        min_t: float = 20.0,
        max_t: float = 980.0,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Uniform t in [0, T], shifted, then clamped to [min_t, max_t] (DMD / critic training)."""
        u = torch.rand(tuple(shape), generator=generator, device=device, dtype=torch.float64)
        t = self.timestep(self.shift_sigma(u))
        return t.clamp(min_t, max_t).float()

    # ------------------------------------------------------------------ conversions
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        sigma = self.sigma(_expand(t, x0)).to(x0.dtype)
        return (1 - sigma) * x0 + sigma * noise

    def x0_from_flow(self, x_t: torch.Tensor, flow: torch.Tensor, t) -> torch.Tensor:
        ct = _compute_dtype(x_t)
        sigma = self.sigma(_expand(t, x_t)).to(ct)
        return (x_t.to(ct) - sigma * flow.to(ct)).to(x_t.dtype)

    def flow_from_x0(self, x_t: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        ct = _compute_dtype(x_t)
        sigma = self.sigma(_expand(t, x_t)).to(ct)
        return ((x_t.to(ct) - x0.to(ct)) / sigma).to(x_t.dtype)

    @staticmethod
    def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression target of the flow-matching loss: v = eps - x0."""
        return noise - x0

    def sampling_sigmas(self, num_steps: int, shift: float | None = None) -> list[float]:
        """Shifted sigmas from 1 to 0 in ``num_steps`` Euler steps (num_steps + 1 values)."""
        s = self.shift if shift is None else shift
        sig = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
        return (s * sig / (1 + (s - 1) * sig)).tolist()

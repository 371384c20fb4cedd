"""The exact denoiser of a finite distribution: limits, the sampler landing on modes, the per-frame gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfforcing.data.toyworld import (
    PixelUnshuffleLatents,
    ToyWorldConfig,
    render,
    render_every_start,
    sample_scenes,
)
from selfforcing.diffusion.samplers import euler_sample
from selfforcing.diffusion.schedule import FlowMatchSchedule
from selfforcing.evaluation import posterior_flow, posterior_x0


def _modes(b=6, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, k, 3, 2, 2, 2, generator=g, dtype=torch.float64).expand(b, -1, -1, -1, -1, -1)


def test_limits_nearest_mode_at_low_noise_and_mean_at_full_noise():
    modes = _modes()
    x0 = modes[:, 2]
    eps = torch.randn_like(x0)
    sigma = 0.01
    assert torch.allclose(posterior_x0((1 - sigma) * x0 + sigma * eps, sigma, modes), x0, atol=1e-9)
    assert torch.allclose(posterior_x0(eps, 1.0, modes), modes.mean(1), atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_euler_with_the_exact_denoiser_samples_the_modes_evenly(eta):
    """The sampler, not a learned model, is under test: from noise it must land on a mode every time,
    deterministic (eta 0) or re-noised at every step (eta 1)."""
    n, k = 256, 4
    modes = _modes(n, k)
    noise = torch.randn(n, 3, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    schedule = FlowMatchSchedule(1000, 3.0)
    sample = euler_sample(lambda x, t: posterior_flow(x, t, modes), noise, 24, schedule, shift=3.0, eta=eta,
                          generator=torch.Generator().manual_seed(2)).sample
    dist = (sample[:, None] - modes).flatten(2).norm(dim=-1)  # [n, k]
    assert dist.min(1).values.max() < 1e-3
    counts = np.bincount(dist.argmin(1).numpy(), minlength=k)
    assert counts.min() > n / k / 2, counts


def test_per_frame_denoiser_cannot_match_the_whole_clip_on_the_toy_world():
    """At the noise levels where the start cell is decided, looking at one frame is far worse than
    looking at the clip: the gap a teacher must close to produce coherent motion."""
    world = ToyWorldConfig()
    codec = PixelUnshuffleLatents(world.latent_factor, world.latent_scale)
    scenes = sample_scenes(16, 3, world)
    x0 = codec.encode(render(scenes, world.num_frames)).double()
    every = render_every_start(scenes, world.num_frames)
    assert every.shape[:2] == (16, 25)
    start = scenes.start[:, 0] * world.grid[1] + scenes.start[:, 1]
    assert np.array_equal(every[np.arange(16), start], render(scenes, world.num_frames))
    modes = codec.encode(every.reshape(-1, *every.shape[2:])).double().reshape(16, 25, *x0.shape[1:])
    g = torch.Generator().manual_seed(0)
    sigma = 0.9
    xt = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    full = (posterior_x0(xt, sigma, modes) - x0).pow(2).mean() / x0.var()
    frame = (posterior_x0(xt, sigma, modes, per_frame=True) - x0).pow(2).mean() / x0.var()
    assert full < 0.05 and frame > 0.3, (full, frame)


def test_bad_inputs_are_named():
    modes = _modes()
    with pytest.raises(ValueError, match="sigma=0.0 must be in"):
        posterior_x0(modes[:, 0], 0.0, modes)
    with pytest.raises(ValueError, match="modes must have shape"):
        posterior_x0(modes[:, 0, :2], 0.5, modes)
    t = torch.tensor([[500.0, 400.0, 500.0]]).expand(6, -1)
    with pytest.raises(ValueError, match="one timestep per sample"):
        posterior_flow(modes[:, 0], t, modes)

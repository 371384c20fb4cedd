"""ODE initialisation: grid placement, deterministic pairs, regression that learns."""

from __future__ import annotations

import pytest
import torch

from selfforcing.diffusion import euler_sample
from selfforcing.forcing import NoiseSource, generate_ode_pairs, ode_grid_indices
from selfforcing.objectives import ode_regression_loss

SHAPE = (6, 4, 4, 4)


def test_warped_steps_lie_on_the_euler_grid(schedule, steps):
    assert ode_grid_indices(steps, 48, schedule) == [0, 12, 24, 36]
    assert ode_grid_indices(steps, 8, schedule) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="not on the 50-step Euler grid"):
        ode_grid_indices(steps, 50, schedule)


def test_ode_pairs_are_deterministic_and_on_the_trajectory(make_model, text, schedule, steps):
    teacher = make_model(7)
    negative = torch.zeros_like(text)
    kwargs = dict(num_steps=8, negative_text=negative, guidance_scale=2.0)
    a = generate_ode_pairs(teacher, text, SHAPE, [1, 2], schedule, steps, **kwargs)
    b = generate_ode_pairs(teacher, text, SHAPE, [1, 2], schedule, steps, **kwargs)
    assert torch.equal(a.states, b.states) and torch.equal(a.target, b.target)
    c = generate_ode_pairs(teacher, text, SHAPE, [1, 3], schedule, steps, **kwargs)
    assert torch.equal(c.states[:, :, :][0], a.states[0]) and not torch.equal(c.states[1], a.states[1])
    assert a.states.shape == (2, 4, *SHAPE)
    torch.testing.assert_close(a.timesteps, torch.tensor(steps, dtype=torch.float32))
    noise = NoiseSource([1, 2]).draw(SHAPE, torch.device("cpu"), torch.float64)
    assert torch.equal(a.states[:, 0], noise)  # the first recorded state is the noise at t = 1000
    full = euler_sample(
        lambda x, t: teacher(x, t, text), noise, 8, schedule,
        uncond_denoise=lambda x, t: teacher(x, t, negative), guidance_scale=2.0, record_trajectory=True,
    )
    torch.testing.assert_close(a.states[:, 2], full.trajectory[4][1])
    torch.testing.assert_close(a.target, full.sample)


def test_ode_regression_loss_decreases(make_model, text, schedule, steps):
    teacher, student = make_model(7, torch.float32), make_model(3, torch.float32)
    pairs = generate_ode_pairs(teacher, text.float(), SHAPE, [1, 2], schedule, steps, num_steps=8)
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)

    def loss_at(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        loss, _ = ode_regression_loss(student, pairs.states, pairs.timesteps, pairs.target, text.float(), schedule, 3, g)
        return loss

    with torch.no_grad():
        before = sum(float(loss_at(1000 + i)) for i in range(4)) / 4
    for step in range(50):
        opt.zero_grad()
        loss_at(step).backward()
        opt.step()
    with torch.no_grad():
        after = sum(float(loss_at(1000 + i)) for i in range(4)) / 4
    assert after < 0.7 * before, (before, after)


def test_ode_regression_state_indices_per_chunk(make_model, text, schedule, steps):
    from selfforcing.objectives import draw_state_indices

    g = torch.Generator().manual_seed(0)
    idx = draw_state_indices(64, 2, 4, g)
    assert (idx[:, 0] != idx[:, 1]).any()  # chunks may sit at different noise levels (release)
    shared = draw_state_indices(8, 2, 4, g, shared=True)
    assert torch.equal(shared[:, 0], shared[:, 1])

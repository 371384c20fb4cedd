"""EMA, guarded optimiser and the configs' release defaults."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from selfforcing.training import (
    EMA,
    EMAConfig,
    GuardedOptimizer,
    OptimConfig,
    TrainingConfig,
    training_preset,
)


def test_release_defaults():
    c = TrainingConfig()
    assert c.generator_optim.betas == (0.0, 0.999) and c.generator_optim.lr == 2e-6
    assert c.critic_optim.lr == 4e-7 and c.critic_steps_per_generator_step == 5
    assert (c.ema.decay, c.ema.start_step) == (0.99, 200)
    assert c.dmd.guidance_scale == 3.0 and (c.dmd.min_t, c.dmd.max_t) == (20.0, 980.0)
    assert c.sid.alpha == 1.0 and c.gan.generator_weight == 0.01 and c.gan.r_sigma == 0.01
    assert training_preset("self_forcing_sid").critic_optim.lr == 2e-6
    assert training_preset("self_forcing_gan").critic_steps_per_generator_step == 1
    with pytest.raises(ValueError, match="valid"):
        training_preset("self_forcing_kl")
    with pytest.raises(ValidationError):
        TrainingConfig(critic_step_ratio=3)


def test_ema_starts_at_start_step_and_follows_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(EMAConfig(decay=0.9, start_step=3))
    ema.update(model, step=2)
    assert not ema.active
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=3)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, step=4)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 0.9 * 1.0 + 0.1 * 2.0))


def test_guarded_optimizer_clips_and_skips():
    model = torch.nn.Linear(3, 1)
    opt = GuardedOptimizer(model.parameters(), OptimConfig(lr=0.1, max_grad_norm=1.0))
    (model(torch.full((1, 3), 100.0)).sum()).backward()
    outcome = opt.step()
    assert outcome.applied and outcome.grad_norm > 1.0
    before = [p.clone() for p in model.parameters()]
    model(torch.full((1, 3), float("inf"))).sum().backward()
    outcome = opt.step()
    assert not outcome.applied and opt.skipped == 1 and outcome.reason == "non-finite gradient"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

"""DMD / SiD / GAN scorers: split gradient == one-graph gradient, signs, formulas, registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfforcing.forcing import NoiseSource, RolloutConfig, RolloutPlan, self_forcing_rollout
from selfforcing.objectives import (
    Conditioning,
    Discriminator,
    DMDScorer,
    GANScorer,
    SampleMeta,
    ScoreNetworks,
    SiDScorer,
    build_objective,
    discriminator_loss,
    dmd_gradient,
    sid_gradient,
    surrogate_loss,
)

LATENT = (4, 4, 4)
# Three chunks, the last two form the loss window and the window's first chunk is masked.
PLAN = RolloutPlan(3, (1, 2, 0), loss_start_chunk=1, mask_first_window_chunk=True)


@pytest.fixture
def setup(make_model, text, steps, schedule):
    gen, real, fake = make_model(0), make_model(1), make_model(2)
    negative = torch.randn(text.shape, generator=torch.Generator().manual_seed(9), dtype=text.dtype)

    def sample():
        return self_forcing_rollout(gen, text, PLAN, LATENT, RolloutConfig(steps, 3), schedule, NoiseSource((3, 4)))

    return gen, real, fake, Conditioning(text, negative), sample


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _max_rel_err(a, b) -> float:
    return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(a, b, strict=True))


def _split_grads(gen, sample_fn, scorer, cond, draw, use_surrogate=False):
    gen.zero_grad()
    sample = sample_fn()
    meta = SampleMeta(grad_mask=sample.grad_mask)
    grad, metrics = scorer.score_gradient(sample.video.detach(), cond, meta, draw)
    if use_surrogate:
        surrogate_loss(sample.video, grad).backward()
    else:
        sample.video.backward(grad)
    return _grads(gen), metrics


def _scores(real, fake, x, cond, draw, schedule, guidance=3.0):
    with torch.no_grad():
        x_t = schedule.add_noise(x, draw.noise, draw.t)
        x0_fake = schedule.x0_from_flow(x_t, fake(x_t, draw.t, cond.text), draw.t)
        c = schedule.x0_from_flow(x_t, real(x_t, draw.t, cond.text), draw.t)
        u = schedule.x0_from_flow(x_t, real(x_t, draw.t, cond.negative_text), draw.t)
    return x0_fake, c + guidance * (c - u)


@pytest.mark.parametrize("use_surrogate", [False, True])
def test_dmd_split_gradient_equals_single_graph(setup, schedule, use_surrogate):
    gen, real, fake, cond, sample_fn = setup
    scorer = DMDScorer(real, fake, schedule, guidance_scale=3.0)
    draw = scorer.draw(sample_fn().video.detach())
    split, metrics = _split_grads(gen, sample_fn, scorer, cond, draw, use_surrogate)

    gen.zero_grad()
    s = sample_fn()
    x = s.video
    x0_fake, x0_real = _scores(real, fake, x.detach(), cond, draw, schedule)
    g = torch.nan_to_num((x0_fake - x0_real) / (x.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True))
    m = s.grad_mask[:, :, None, None, None].expand_as(x)
    loss = 0.5 * F.mse_loss(x[m], (x - g).detach()[m])  # the release's form
    loss.backward()
    err = _max_rel_err(split, _grads(gen))
    print(f"split vs single-graph max relative error: {err:.2e}")
    assert err < 1e-5, err
    assert metrics["dmd_loss"] == pytest.approx(float(loss.detach()), rel=1e-9)
    assert all(p.grad is None for p in fake.parameters()) and all(p.grad is None for p in real.parameters())


def test_sid_split_gradient_equals_single_graph(setup, schedule):
    gen, real, fake, cond, sample_fn = setup
    scorer = SiDScorer(real, fake, schedule, guidance_scale=3.0, alpha=1.0)
    draw = scorer.draw(sample_fn().video.detach())
    split, metrics = _split_grads(gen, sample_fn, scorer, cond, draw)

    gen.zero_grad()
    s = sample_fn()
    x = s.video
    x0_fake, x0_real = _scores(real, fake, x.detach(), cond, draw, schedule)
    normaliser = (x.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    per_elem = (x0_real - x0_fake) * ((x0_real - x) - 1.0 * (x0_real - x0_fake)) / normaliser
    m = s.grad_mask[:, :, None, None, None].expand_as(x)
    loss = per_elem[m].mean()
    loss.backward()
    err = _max_rel_err(split, _grads(gen))
    print(f"split vs single-graph max relative error: {err:.2e}")
    assert err < 1e-5, err
    assert metrics["sid_loss"] == pytest.approx(float(loss.detach()), rel=1e-9)


@pytest.mark.parametrize("relativistic", [False, True])
def test_gan_split_gradient_equals_single_graph(setup, make_model, schedule, relativistic):
    gen, _, _, cond, sample_fn = setup
    disc = Discriminator(make_model(5), num_registers=2)
    real_latents = torch.randn(2, 6, *LATENT, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    cond = Conditioning(cond.text, cond.negative_text, real_latents)
    scorer = GANScorer(disc, schedule, relativistic=relativistic, generator_weight=0.01)
    draw = scorer.draw(sample_fn().video.detach(), real_latents)
    split, metrics = _split_grads(gen, sample_fn, scorer, cond, draw)
    assert all(p.grad is None for p in disc.parameters())  # the scorer never trains the discriminator

    gen.zero_grad()
    s = sample_fn()
    m = s.grad_mask[:, :, None, None, None].expand_as(s.video)
    x = torch.where(m, s.video, s.video.detach())
    fake_logit = disc(schedule.add_noise(x, draw.noise, draw.t), draw.t, cond.text)
    if relativistic:
        real_logit = disc(schedule.add_noise(real_latents, draw.real_noise, draw.t), draw.t, cond.text)
        loss = 0.01 * F.softplus(-(fake_logit - real_logit)).mean()
    else:
        loss = 0.01 * F.softplus(-fake_logit).mean()
    loss.backward()
    err = _max_rel_err(split, _grads(gen))
    print(f"split vs single-graph max relative error: {err:.2e}")
    assert err < 1e-5, err
    assert metrics["gan_g_loss"] == pytest.approx(float(loss.detach()), rel=1e-9)


def test_dmd_gradient_is_zero_when_fake_equals_real(make_model, text, schedule):
    model = make_model(1)
    scorer = DMDScorer(model, model, schedule, guidance_scale=0.0)
    x = torch.randn(2, 6, *LATENT, dtype=torch.float64)
    grad, _ = scorer.score_gradient(x, Conditioning(text))
    assert grad.abs().max() == 0


def test_dmd_gradient_points_from_fake_to_real():
    g = torch.Generator().manual_seed(0)
    x, fake, real = (torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    grad = dmd_gradient(x, fake, real).grad
    normaliser = (x - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    torch.testing.assert_close(-grad * x.numel() * normaliser, real - fake)
    assert torch.equal(torch.sign(-grad), torch.sign(real - fake))
    # A small step against the gradient brings the sample closer to the real prediction than to the fake.
    assert float(((x - 1e3 * grad) - x).flatten() @ (real - fake).flatten()) > 0


def test_dmd_nan_guard():
    x = torch.ones(1, 1, 1, 1, 2, dtype=torch.float64)
    grad = dmd_gradient(x, x.clone(), x.clone()).grad  # normaliser 0 -> 0/0
    assert torch.isfinite(grad).all() and grad.abs().max() == 0


def test_sid_matches_hand_computed_formula():
    def t(values):
        return torch.tensor(values, dtype=torch.float64).reshape(1, 1, 1, 1, 2)

    x, real, fake = t([1.0, 2.0]), t([2.0, 0.0]), t([1.0, 1.0])
    # normaliser = mean|x - real| = 1.5; diff = real - fake = [1, -1]; real - x = [1, -2].
    res = sid_gradient(x, fake, real, alpha=1.0)
    assert res.metrics["sid_loss"] == pytest.approx((0.0 + 1.0 / 1.5) / 2)
    torch.testing.assert_close(res.grad, t([-1 / 3, 1 / 3]))
    res_half = sid_gradient(x, fake, real, alpha=0.5)  # terms [0.5, 1.5] / 1.5
    assert res_half.metrics["sid_loss"] == pytest.approx((0.5 + 1.5) / 1.5 / 2)
    torch.testing.assert_close(res_half.grad, res.grad)  # alpha does not reach dL/dx (detached scores)


def test_registry_builds_by_name_and_lists_valid_names(make_model, schedule):
    from selfforcing.training.config import DMDConfig

    nets = ScoreNetworks(real_score=make_model(1), fake_score=make_model(2))
    assert isinstance(build_objective("dmd", nets, schedule, DMDConfig()), DMDScorer)
    with pytest.raises(ValueError, match=r"unknown objective 'kl'; valid: \['dmd', 'gan', 'sid'\]"):
        build_objective("kl", nets, schedule, DMDConfig())
    with pytest.raises(ValueError, match="needs a discriminator"):
        build_objective("gan", nets, schedule, None)


def test_r1_finite_difference_estimates_the_directional_derivative(make_model, text, schedule):
    disc = Discriminator(make_model(5))
    x = torch.randn(2, 6, *LATENT, dtype=torch.float64)
    real = torch.randn(2, 6, *LATENT, dtype=torch.float64)
    scorer = GANScorer(disc, schedule)
    draw = scorer.draw(x, real, perturb=True)
    _, metrics = discriminator_loss(disc, x, real, text, draw, schedule, r1_weight=1.0, r2_weight=1.0, sigma=0.01)
    real_t = schedule.add_noise(real, draw.real_noise, draw.t)
    h = 1e-6  # central difference in fp64: the directional derivative to ~1e-9 (no double backward on CPU SDPA)
    with torch.no_grad():
        up, down = (disc(real_t + s * h * draw.perturb_real, draw.t, text) for s in (1, -1))
    exact = float(((up - down) / (2 * h)).pow(2).mean())
    assert metrics["r1"] == pytest.approx(exact, rel=0.05)
    assert metrics["r2"] > 0


def test_timestep_draws_shift_clamp_and_exit_step_range(schedule):
    from selfforcing.objectives import draw_timesteps

    g = torch.Generator().manual_seed(0)
    t = draw_timesteps(4096, 3, schedule, g, 20.0, 980.0)
    assert t.shape == (4096, 3) and torch.equal(t[:, 0], t[:, 2])  # one t per sample
    assert float(t.min()) == 20.0 and float(t.max()) == 980.0  # clamped at both ends
    assert float(t.median()) > 700  # shift 5 pushes the median from 500 to ~833
    ranged = draw_timesteps(512, 1, schedule, g, 20.0, 980.0, t_range=(250.0, 500.0))
    lo, hi = (1000 * schedule.shift_sigma(s) for s in (0.25, 0.5))
    assert lo - 1e-3 <= float(ranged.min()) and float(ranged.max()) <= hi + 1e-3


def test_guided_real_score_is_one_batched_call_equal_to_two(make_model, text, schedule):
    """CFG's conditional and unconditional passes run as one call on 2B samples and give what two
    separate calls give."""
    from selfforcing.objectives import guided_x0, x0_prediction

    model = make_model(seed=3)
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    g = torch.Generator().manual_seed(5)
    x_t = torch.randn(2, 6, 4, 4, 6, generator=g, dtype=torch.float64)
    t = torch.full((2, 6), 400.0, dtype=torch.float64)
    negative = torch.randn(text.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        guided = guided_x0(model, x_t, t, text, negative, 3.0, schedule)
        assert calls == [4]
        cond = x0_prediction(model, x_t, t, text, schedule)
        uncond = x0_prediction(model, x_t, t, negative, schedule)
    torch.testing.assert_close(guided, cond + 3.0 * (cond - uncond), rtol=1e-9, atol=1e-9)

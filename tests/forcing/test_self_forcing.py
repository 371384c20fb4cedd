"""Self Forcing rollout: plan draws, equality with inference, truncated gradients, loss window."""

from __future__ import annotations

import pytest
import torch

from selfforcing.diffusion import timesteps_like
from selfforcing.forcing import (
    NoiseSource,
    RolloutConfig,
    RolloutPlan,
    TruncationPlan,
    draw_rollout_plan,
    self_forcing_rollout,
)
from selfforcing.inference.pipeline import VideoPipeline

LATENT = (4, 4, 4)
SEEDS = (11, 12)


def _rollout(model, text, plan, steps, schedule, cache=None, k=3):
    return self_forcing_rollout(
        model, text, plan, LATENT, RolloutConfig(steps, k), schedule, NoiseSource(SEEDS), cache=cache
    )


def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def _max_rel_err(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a)


def _manual_truncated(model, text, exits, steps, schedule):
    """Test oracle: every step under no_grad except each chunk's exit step; cache writes under no_grad."""
    noise = NoiseSource(SEEDS)
    cache = model.new_kv_cache(2, max_frames=3 * len(exits))
    out = []
    for i, e in enumerate(exits):
        x = noise.draw((3, *LATENT), torch.device("cpu"), torch.float64)
        for s in range(e + 1):
            t = timesteps_like(x, steps[s])
            with torch.set_grad_enabled(s == e):
                x0 = schedule.x0_from_flow(x, model(x, t, text, kv_cache=cache, start_frame=3 * i), t)
            if s < e:
                x = schedule.add_noise(x0, noise.draw((3, *LATENT), x.device, x.dtype), timesteps_like(x, steps[s + 1]))
        with torch.no_grad():
            model(x0.detach(), timesteps_like(x0, 0.0), text, kv_cache=cache, start_frame=3 * i)
        out.append(x0)
    return torch.cat(out, dim=1)


def test_plan_draws_are_pure_and_follow_the_mode():
    a = draw_rollout_plan(4, seed=7, truncation="per_chunk", min_chunks=2, max_chunks=5)
    assert a == draw_rollout_plan(4, seed=7, truncation="per_chunk", min_chunks=2, max_chunks=5)
    plans = [draw_rollout_plan(4, seed=s, truncation="shared", min_chunks=2, max_chunks=5) for s in range(40)]
    assert all(len(set(p.exit_steps)) == 1 for p in plans)
    assert {p.exit_steps[0] for p in plans} == {0, 1, 2, 3}
    assert {p.num_chunks for p in plans} == {2, 3, 4, 5}
    per_chunk = [draw_rollout_plan(4, seed=s, truncation="per_chunk", min_chunks=4).exit_steps for s in range(10)]
    assert any(len(set(e)) > 1 for e in per_chunk)
    assert draw_rollout_plan(4, seed=3, truncation="last", min_chunks=3).exit_steps == (3, 3, 3)
    with pytest.raises(ValueError, match="valid"):
        TruncationPlan("sometimes")


def test_long_rollout_masks_first_window_chunk():
    plans = [draw_rollout_plan(4, s, "shared", min_chunks=2, max_chunks=4, window_chunks=2) for s in range(30)]
    long = next(p for p in plans if p.num_chunks == 4)
    assert long.loss_start_chunk == 2 and long.mask_first_window_chunk
    assert long.grad_chunks == [False, False, False, True]
    short = next(p for p in plans if p.num_chunks == 2)
    assert short.grad_chunks == [True, True] and not short.mask_first_window_chunk


def test_no_truncation_reproduces_the_inference_pipeline(cfg, make_model, text, schedule):
    model = make_model(0)
    pipe = VideoPipeline(cfg, model, text_encoder=None, vae=None, device=torch.device("cpu"))
    streamed = torch.cat(
        [c.latents for c in pipe.stream(["a", "b"], seed=list(SEEDS), decode=False, text_embeddings=text)], dim=1
    )
    plan = RolloutPlan(num_chunks=2, exit_steps=(3, 3))
    shape = streamed.shape[2:]
    with torch.no_grad():
        ours = self_forcing_rollout(
            model, text, plan, tuple(shape), RolloutConfig(pipe.timesteps, 3), schedule, NoiseSource(SEEDS)
        ).video
    assert torch.equal(ours, streamed)
    # With grad enabled (training) the exit step takes the gradient path of the attention: same values.
    trained = self_forcing_rollout(
        model, text, plan, tuple(shape), RolloutConfig(pipe.timesteps, 3), schedule, NoiseSource(SEEDS)
    ).video
    assert trained.requires_grad
    torch.testing.assert_close(trained, streamed, rtol=0, atol=1e-12)


def test_truncated_gradient_equals_no_grad_reference_and_depends_on_exit(make_model, text, steps, schedule):
    model = make_model(0)
    w = torch.randn(2, 6, *LATENT, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exits = (1, 2)
    cache = model.new_kv_cache(2, max_frames=6)
    sample = _rollout(model, text, RolloutPlan(2, exits), steps, schedule, cache=cache)
    (sample.video * w).sum().backward()
    ours = _grads(model)
    assert cache.k.grad_fn is None and not cache.k.requires_grad and not cache.v.requires_grad

    model.zero_grad()
    reference = _manual_truncated(model, text, exits, steps, schedule)
    torch.testing.assert_close(sample.video.detach(), reference.detach(), rtol=0, atol=1e-12)
    (reference * w).sum().backward()
    err = _max_rel_err(ours, _grads(model))
    print(f"truncated rollout vs no_grad reference max relative error: {err:.2e}")
    assert err < 1e-10, err

    model.zero_grad()
    (_rollout(model, text, RolloutPlan(2, (2, 2)), steps, schedule).video * w).sum().backward()
    changed = _max_rel_err(_grads(model), ours)
    print(f"relative change of the gradient when the exit steps change: {changed:.2e}")
    assert changed > 1e-3
    assert sample.exit_steps == [1, 2]
    assert sample.t_from.tolist() == pytest.approx([steps[1]] * 3 + [steps[2]] * 3)
    assert sample.t_to.tolist() == pytest.approx([steps[2]] * 3 + [steps[3]] * 3)


def test_only_exit_steps_run_with_grad(make_model, text, steps, schedule):
    model = make_model(0)
    grad_calls = []
    model.register_forward_hook(lambda m, i, o: grad_calls.append(torch.is_grad_enabled()))
    _rollout(model, text, RolloutPlan(2, (3, 1)), steps, schedule)
    # chunk 0: 4 steps + cache write, chunk 1: 2 steps + cache write; grad only at the two exits.
    assert grad_calls == [False, False, False, True, False, False, True, False]


def test_loss_window_of_a_longer_rollout(make_model, text, steps, schedule):
    model = make_model(0)
    plan = RolloutPlan(3, (2, 0, 1), loss_start_chunk=1, mask_first_window_chunk=True)
    sample = _rollout(model, text, plan, steps, schedule)
    assert sample.video.shape == (2, 6, *LATENT)
    assert sample.grad_mask[:, :3].sum() == 0 and sample.grad_mask[:, 3:].all()
    masked = torch.autograd.grad(sample.video[:, :3].sum(), list(model.parameters()), allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in masked)
    assert sample.video[:, 3:].requires_grad
    with torch.no_grad():
        full = _rollout(model, text, RolloutPlan(3, (2, 0, 1)), steps, schedule).video
    torch.testing.assert_close(sample.video.detach(), full[:, 3:], rtol=0, atol=1e-12)


def test_frame_wise_rollout(make_model, text, steps, schedule):
    model = make_model(0)
    plan = draw_rollout_plan(4, seed=1, truncation="per_chunk", min_chunks=4)
    sample = _rollout(model, text, plan, steps, schedule, k=1)
    assert sample.video.shape == (2, 4, *LATENT)
    assert sample.exit_steps == list(plan.exit_steps)
    assert torch.isfinite(sample.video).all()

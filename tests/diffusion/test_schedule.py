import pytest
import torch

from selfforcing.diffusion import FlowMatchSchedule, euler_sample, few_step_sample


def test_warped_step_list_matches_release():
    warped = FlowMatchSchedule(shift=5.0).warp_timesteps([1000, 750, 500, 250])
    assert [round(t, 1) for t in warped] == [1000.0, 937.5, 833.3, 625.0]


def test_x0_flow_round_trip_and_add_noise():
    s = FlowMatchSchedule()
    x0, eps = torch.randn(2, 3, 4, 2, 2, dtype=torch.float64), torch.randn(2, 3, 4, 2, 2, dtype=torch.float64)
    t = torch.tensor([[100.0, 500.0, 900.0]] * 2, dtype=torch.float64)
    xt = s.add_noise(x0, eps, t)
    flow = s.flow_target(x0, eps)
    torch.testing.assert_close(s.x0_from_flow(xt, flow, t), x0)
    torch.testing.assert_close(s.flow_from_x0(xt, x0, t), flow)
    torch.testing.assert_close(s.add_noise(x0, eps, torch.zeros(2, 3)), x0)


def test_sampled_timesteps_are_shifted_and_clamped():
    s = FlowMatchSchedule(shift=5.0)
    t = s.sample_timesteps((20000,), torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980
    assert t.median() > 700  # shift 5 pushes most mass to high noise


def test_samplers_recover_data_with_an_exact_denoiser():
    s = FlowMatchSchedule(shift=3.0)
    target = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64)

    def oracle(x, t):  # the exact flow toward a single data point
        return s.flow_from_x0(x, target.expand_as(x), t.clamp(min=1e-3))

    noise = torch.randn_like(target)
    out = few_step_sample(oracle, noise, s.warp_timesteps([1000, 500]), s, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target)
    res = euler_sample(oracle, noise, 8, s, record_trajectory=True)
    torch.testing.assert_close(res.sample, target)
    assert len(res.trajectory) == 9 and res.trajectory[0][0] == 1000.0


def test_euler_eta_interpolates_between_the_ode_and_the_few_step_loop():
    s = FlowMatchSchedule(shift=3.0)
    w = torch.randn(4, 4, dtype=torch.float64)

    def denoise(x, t):  # any smooth function of (x, t) will do: the samplers' arithmetic is under test
        return torch.tanh(x @ w) * (t[..., None, None, None] / 1000)

    noise = torch.randn(2, 3, 1, 4, 4, dtype=torch.float64)
    ode = euler_sample(denoise, noise, 6, s).sample
    # eta = 0 through the stochastic path's formula is the Euler step, up to rounding
    torch.testing.assert_close(euler_sample(denoise, noise, 6, s, eta=1e-12,
                                            generator=torch.Generator().manual_seed(0)).sample, ode)
    # eta = 1 is "predict x0, re-noise with fresh noise" at the Euler grid's timesteps
    grid = [s.timestep(sig) for sig in s.sampling_sigmas(6)[:-1]]
    loop = few_step_sample(denoise, noise, grid, s, torch.Generator().manual_seed(5))
    renoised = euler_sample(denoise, noise, 6, s, eta=1.0, generator=torch.Generator().manual_seed(5)).sample
    torch.testing.assert_close(renoised, loop)
    with pytest.raises(ValueError, match="eta=1.5 must be in"):
        euler_sample(denoise, noise, 6, s, eta=1.5)

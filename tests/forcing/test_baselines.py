"""Teacher Forcing, Diffusion Forcing and the CausVid (DF) generator sample."""

from __future__ import annotations

import torch

from selfforcing.forcing import (
    diffusion_forcing_loss,
    diffusion_forcing_sample,
    per_chunk_timesteps,
    teacher_forcing_inputs,
    teacher_forcing_loss,
)


def _x0(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 6, 4, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_teacher_forcing_inputs_clean_context_one_noisy_chunk(schedule):
    t, mask = teacher_forcing_inputs(16, 9, 3, schedule, torch.Generator().manual_seed(0))
    for row_t, row_m in zip(t, mask, strict=True):
        assert row_m.sum() == 3 and (row_t[~row_m] == 0).all() and (row_t[row_m] >= 20).all()
        assert len(set(row_t[row_m].tolist())) == 1


def test_teacher_forcing_loss_sees_only_earlier_clean_frames(make_model, text, schedule):
    model = make_model(0)
    x0 = _x0()
    _, mask = teacher_forcing_inputs(2, 6, 3, schedule, torch.Generator().manual_seed(4))
    base, _ = teacher_forcing_loss(model, x0, text, schedule, 3, torch.Generator().manual_seed(4))
    later = x0.clone()
    for b in range(2):  # change every frame after each sample's target chunk: no effect (block-causal)
        last = int(mask[b].nonzero().max())
        later[b, last + 1 :] += 5.0
    same, _ = teacher_forcing_loss(model, later, text, schedule, 3, torch.Generator().manual_seed(4))
    assert float(same.detach()) == float(base.detach())
    base.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_diffusion_forcing_noises_chunks_independently(make_model, text, schedule):
    t = per_chunk_timesteps(32, 6, 3, schedule, torch.Generator().manual_seed(0))
    assert torch.equal(t[:, 0], t[:, 2]) and torch.equal(t[:, 3], t[:, 5])
    assert (t[:, 0] != t[:, 3]).any()
    model = make_model(0)
    loss, metrics = diffusion_forcing_loss(model, _x0(), text, schedule, 3, torch.Generator().manual_seed(1))
    loss.backward()
    assert metrics["df_loss"] > 0 and model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0


def test_causvid_sample_denoises_noised_data_per_chunk(make_model, text, schedule, steps):
    model = make_model(0)
    sample = diffusion_forcing_sample(model, _x0(), text, steps, schedule, 3, torch.Generator().manual_seed(2))
    assert sample.video.shape == (2, 6, 4, 4, 4) and sample.video.requires_grad
    assert set(sample.exit_steps) <= set(range(len(steps)))
    assert sample.grad_mask.all()
    lo, hi = sample.denoised_range
    assert 0 <= lo < hi <= 1000

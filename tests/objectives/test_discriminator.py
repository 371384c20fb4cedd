"""The discriminator reads the backbone's last hidden states through WanDiT(return_features=True)."""

from __future__ import annotations

import torch

from selfforcing.objectives import Discriminator


def test_return_features_keeps_the_flow_and_exposes_hidden_states(make_model, text):
    model = make_model(0)
    x = torch.randn(2, 6, 4, 4, 4, dtype=torch.float64)
    t = torch.full((2, 6), 500.0)
    flow, feats = model(x, t, text, return_features=True)
    assert torch.equal(flow, model(x, t, text))
    assert feats.shape == (2, 6 * 2 * 2, model.config.dim)


def test_discriminator_logit_per_sample_and_trainable_head(make_model, text):
    disc = Discriminator(make_model(0), num_registers=3)
    x = torch.randn(2, 6, 4, 4, 4, dtype=torch.float64)
    logits = disc(x, torch.full((2, 6), 300.0), text)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert disc.head.registers.grad.abs().sum() > 0 and disc.backbone.head.head.weight.grad is None

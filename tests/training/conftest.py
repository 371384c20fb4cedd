"""Tiny-preset roles for the training tests (fp32)."""

from __future__ import annotations

import copy

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models.factory import build_dit
from selfforcing.training import TrainBatch, TrainingConfig


@pytest.fixture
def platform():
    return load_config("tiny")


@pytest.fixture
def train_config():
    """The release's settings, with rollouts the tiny video's length and learning rates that move tiny
    models within a few steps."""
    return TrainingConfig(
        rollout={"min_frames": 6, "max_frames": 6},
        generator_optim={"lr": 1e-4},
        critic_optim={"lr": 1e-3},
        ema={"start_step": 0},
        batch_size=2,
        max_steps=30,
    )


@pytest.fixture
def models(platform):
    """(generator, teacher, critic): the critic starts as a copy of the teacher, as in the release."""
    teacher = build_dit(platform, seed=1)
    return build_dit(platform, seed=0), teacher, copy.deepcopy(teacher)


@pytest.fixture
def batch(platform):
    g = torch.Generator().manual_seed(0)
    m = platform.model
    text = torch.randn(2, m.text_len, m.text_dim, generator=g)
    negative = torch.randn(2, m.text_len, m.text_dim, generator=g)
    real = torch.randn(2, 6, m.in_dim, 4, 6, generator=g)
    return TrainBatch(text, negative, real)

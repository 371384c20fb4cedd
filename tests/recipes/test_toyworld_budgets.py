"""The toy-world budgets turned into training setups: long Self Forcing rollouts and the teacher's schedule."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models.factory import build_dit
from selfforcing.recipes.toyworld.config import SelfForcingBudget, TeacherBudget
from selfforcing.recipes.toyworld.students import generator_platform, rollout_frames, training_config
from selfforcing.recipes.toyworld.teacher import lr_factor
from selfforcing.recipes.toyworld.world import ToyData
from selfforcing.training import GeneratorRole, TrainBatch


@pytest.fixture(scope="module")
def toy():
    return load_config("toy", None, ["runtime.device=cpu"])


def test_long_rollouts_train_on_the_last_window_with_a_rolling_cache(toy):
    budget = SelfForcingBudget(max_rollout_frames=24)
    tc = training_config(toy, budget)
    assert (tc.rollout.min_frames, tc.rollout.max_frames, tc.rollout.loss_window_frames) == (12, 24, 12)
    rolling = generator_platform(toy, budget)
    assert rolling.generation.window_frames == 12
    assert toy.generation.window_frames is None  # the caller's config is left alone

    role = GeneratorRole(build_dit(toy, "cpu", seed=0), rolling, tc)
    plans = [role.plan(step) for step in range(40)]
    assert {p.num_chunks for p in plans} == {4, 5, 6, 7, 8}
    data = ToyData(toy)
    batch = TrainBatch(text=data.embed(["a red square moving left slowly"]))
    long_step = next(i for i, p in enumerate(plans) if p.num_chunks == 8)
    short_step = next(i for i, p in enumerate(plans) if p.num_chunks == 4)
    with torch.no_grad():
        long, short = role.sample(batch, long_step), role.sample(batch, short_step)
    # Both hand the scorer one training-length window; a long rollout's first window chunk gets no gradient.
    assert long.video.shape == short.video.shape == (1, 12, 12, 5, 5)
    assert long.grad_mask[0].tolist() == [False] * 3 + [True] * 9
    assert short.grad_mask.all()


def test_training_length_rollouts_and_causvid_keep_the_full_cache(toy):
    for budget in (SelfForcingBudget(max_rollout_frames=None),
                   SelfForcingBudget(max_rollout_frames=24, rollout="diffusion_forcing")):
        assert rollout_frames(toy, budget) == 12
        assert training_config(toy, budget).rollout.max_frames == 12
        assert generator_platform(toy, budget) is toy


def test_rollouts_shorter_than_the_training_length_are_refused(toy):
    with pytest.raises(ValueError, match="max_rollout_frames=9 must be >= the training length"):
        training_config(toy, SelfForcingBudget(max_rollout_frames=9))


def test_teacher_lr_decays_by_whichever_budget_runs_out_first():
    budget = TeacherBudget(steps=1000, warmup_steps=10, min_lr_fraction=0.05)
    assert lr_factor(0, budget) == pytest.approx(0.1)
    assert lr_factor(10, budget) == pytest.approx(1.0)
    # Early in the step budget but at the wall-time cap: the schedule has reached its floor.
    assert lr_factor(100, budget, elapsed_fraction=1.0) == pytest.approx(0.05)
    assert lr_factor(505, budget, elapsed_fraction=0.5) == pytest.approx(0.525)
    # Behind on time: the step count still drives the schedule.
    assert lr_factor(1000, budget, elapsed_fraction=0.1) == pytest.approx(0.05)

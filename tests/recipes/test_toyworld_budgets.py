"""The toy-world budgets turned into training jobs: long Self Forcing rollouts, the teacher's schedule, step
budgets that no machine load can shorten, and the stages' jobs equal to jobs/configs/toy_*.yaml."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models.factory import build_dit
from selfforcing.recipes.toyworld.config import SelfForcingBudget, TeacherBudget
from selfforcing.recipes.toyworld.digest import weights_sha256
from selfforcing.recipes.toyworld.guard import StageTimeout, WallClockGuard
from selfforcing.recipes.toyworld.students import generator_platform, rollout_frames, training_config
from selfforcing.recipes.toyworld.teacher import lr_factor, train_teacher
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


def test_teacher_lr_warms_up_then_decays_over_exactly_the_step_budget():
    budget = TeacherBudget(steps=1000, warmup_steps=10, min_lr_fraction=0.05)
    lrs = [lr_factor(step, budget) for step in range(budget.steps)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.05)  # the floor is reached at the last step, not before, not after
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[10 + (999 - 10) // 2] == pytest.approx(0.525, abs=2e-3)


def test_guard_aborts_a_stage_on_the_wall_clock_only():
    WallClockGuard("tiny", None)(7, 7)  # no limit: never aborts
    WallClockGuard("tiny", 60.0)(1, 7)
    # A limit that has passed aborts with an error naming the stage and the steps done: the loop calls the
    # guard after every step, so a stage never returns a model trained for fewer steps.
    with pytest.raises(StageTimeout, match=r"stage 'tiny' ran past its wall-time limit .* after 1 of 7 steps"):
        WallClockGuard("tiny", 1e-9)(1, 7)


def test_guard_aborts_early_when_the_first_steps_show_the_budget_cannot_finish():
    guard = WallClockGuard("teacher", minutes=60.0, project_after=2)
    guard.check(1, 10**12)  # no projection before project_after steps
    with pytest.raises(StageTimeout, match=r"stage 'teacher' would need ~.* min for 1000000000000 steps"):
        guard.check(2, 10**12)
    WallClockGuard("teacher", minutes=60.0, project_after=2).check(2, 3)  # a budget that fits goes on


def test_budgets_no_longer_accept_a_wall_time_cap():
    with pytest.raises(ValueError, match="max_minutes"):
        TeacherBudget(max_minutes=13.0)
    with pytest.raises(ValueError, match="max_minutes"):
        SelfForcingBudget(max_minutes=5.0)


def test_same_teacher_budget_gives_the_same_weights(toy, tmp_path):
    """The step budget, seeds and CPU generators make a teacher a function of its budget alone."""
    budget = TeacherBudget(steps=2, batch_size=2, warmup_steps=1)
    states = []
    for i in range(2):
        model, stats = train_teacher(toy, budget, tmp_path / f"run{i}", quiet=True)
        assert stats["steps"] == 2
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_weights_digest_names_the_bytes(tmp_path, toy):
    from selfforcing.models.factory import save_generator

    model = build_dit(toy, "cpu", seed=0)
    a = weights_sha256(save_generator(toy, model, tmp_path / "a"))
    assert a == weights_sha256(save_generator(toy, model, tmp_path / "b"))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert weights_sha256(save_generator(toy, model, tmp_path / "c")) != a
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        weights_sha256(tmp_path)


def test_recipe_stages_run_the_toy_job_configs(toy, tmp_path):
    """The recipe's stages are jobs/configs/toy_{teacher,ode_init,dmd}.yaml at their default budgets: the same
    training sections, so `ray job submit` of those configs trains what `selfforcing toyworld run` trains."""
    from pathlib import Path

    from selfforcing.config.job import load_job_config
    from selfforcing.recipes.toyworld import RecipeConfig
    from selfforcing.recipes.toyworld.jobs import ode_init_job, teacher_job
    from selfforcing.training.job_config import SelfForcingJobConfig
    from selfforcing.training.supervised_config import ODEInitJobConfig, TeacherJobConfig

    configs = Path(__file__).resolve().parents[2] / "jobs" / "configs"
    recipe = RecipeConfig()
    teacher = load_job_config(TeacherJobConfig, configs / "toy_teacher.yaml")
    mine = teacher_job(toy, recipe.teacher, tmp_path)
    assert mine.training == teacher.training and mine.data == teacher.data and mine.models == teacher.models
    ode = load_job_config(ODEInitJobConfig, configs / "toy_ode_init.yaml")
    mine = ode_init_job(toy, recipe.ode_init, tmp_path, tmp_path / "teacher", tmp_path / "pairs")
    assert mine.training == ode.training and mine.data.seed == ode.data.seed
    dmd = load_job_config(SelfForcingJobConfig, configs / "toy_dmd.yaml")
    assert training_config(toy, recipe.self_forcing) == dmd.training
    assert generator_platform(toy, recipe.self_forcing).generation == dmd.platform.generation

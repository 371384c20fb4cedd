"""The step programs on the shared training loop, in one process (``run_single_process``: guarded AdamW, no
Ray): a step does not depend on how its global batch is split, a resumed run equals one that never stopped,
Self Forcing equals ``LocalTrainer``, and bad inputs fail naming what to change."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from selfforcing.config import ConfigError, load_config
from selfforcing.config.job import load_job_config
from selfforcing.data.pipelines.ode_pairs import generator_timesteps
from selfforcing.data.trajectories import write_ode_trajectories
from selfforcing.diffusion import FlowMatchSchedule
from selfforcing.forcing import (
    diffusion_forcing_loss,
    generate_ode_pairs,
    sample_generators,
    teacher_forcing_loss,
)
from selfforcing.models.factory import build_dit
from selfforcing.objectives.denoising import flow_matching_loss
from selfforcing.training import CriticRole, GeneratorRole, LocalTrainer
from selfforcing.training.job_config import SelfForcingJobConfig
from selfforcing.training.loop import ATTEMPTS_FILE, FINAL_DIR
from selfforcing.training.networks import load_network, scoring_networks
from selfforcing.training.programs.denoising import METRIC, NOISE_STREAM, denoising_draws
from selfforcing.training.programs.ode_init import TrajectorySource
from selfforcing.training.programs.self_forcing import build_source
from selfforcing.training.single_process import run_single_process
from selfforcing.training.supervised_config import ODEInitJobConfig, TeacherJobConfig

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


def _job(cls, config: str, tmp: Path, name: str, *overrides: str):
    return load_job_config(cls, CONFIGS / config, [
        f"run.name={name}", f"run.storage_path={tmp}", "logging.sample_video=false", "scaling.num_workers=1",
        *overrides,
    ])


def _final(outcome, names=("generator", "ema")) -> dict[str, dict[str, torch.Tensor]]:
    folder = outcome.output_dir / FINAL_DIR
    return {n: torch.load(folder / f"{n}.pt") for n in names if (folder / f"{n}.pt").exists()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("loss", ["flow_matching", "teacher_forcing", "diffusion_forcing"])
def test_teacher_step_does_not_depend_on_how_the_batch_is_split(tmp_path, loss):
    """4 videos per step as one micro-batch or as 4 accumulated ones: the same weights (per-sample draws of
    (seed, step, index), each micro-batch's mean loss averaged over the accumulation)."""
    common = (f"training.loss={loss}", "training.max_steps=2")
    whole = run_single_process(_job(TeacherJobConfig, "tiny_teacher.yaml", tmp_path, "whole", *common), quiet=True)
    split = run_single_process(_job(TeacherJobConfig, "tiny_teacher.yaml", tmp_path, "split", *common,
                                    "scaling.gradient_accumulation_steps=4"), quiet=True)
    a, b = _final(whole), _final(split)
    assert a.keys() == {"generator", "ema"}
    for name in a:
        assert _max_diff(a[name], b[name]) < 1e-5, name
    start = load_network("random:0", load_config("tiny")).state_dict()
    assert _max_diff(a["generator"], start) > 1e-4  # the steps moved the weights
    assert whole.final_metrics[METRIC[loss]] > 0


@pytest.mark.parametrize("loss, single", [("teacher_forcing", teacher_forcing_loss),
                                          ("diffusion_forcing", diffusion_forcing_loss)])
def test_batched_draws_give_the_mean_of_each_samples_own_loss(tiny_config, loss, single):
    model = build_dit(tiny_config, seed=0)
    g = torch.Generator().manual_seed(0)
    m = tiny_config.model
    x0 = torch.randn(3, 6, m.in_dim, 4, 6, generator=g)
    text = torch.randn(3, m.text_len, m.text_dim, generator=g)
    sched = tiny_config.schedule
    schedule = FlowMatchSchedule(sched.num_train_timesteps, sched.shift)
    t, noise, mask = denoising_draws(loss, x0, sample_generators(7, 5, [0, 1, 2], NOISE_STREAM), schedule, 3)
    with torch.no_grad():
        batched = flow_matching_loss(model, x0, text, t, noise, schedule, frame_mask=mask, frames_per_chunk=3)
        own = [single(model, x0[i : i + 1], text[i : i + 1], schedule, 3, gen)[0]
               for i, gen in enumerate(sample_generators(7, 5, [0, 1, 2], NOISE_STREAM))]
    assert float(batched) == pytest.approx(float(torch.stack(own).mean()), rel=1e-5)


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> Path:
    """6 teacher ODE trajectories of the tiny preset (random teacher, 8 Euler steps) as one Parquet file."""
    platform = load_config("tiny")
    teacher = build_dit(platform, seed=0)
    m = platform.model
    text = torch.randn(6, m.text_len, m.text_dim, generator=torch.Generator().manual_seed(0))
    sched = platform.schedule
    pairs = generate_ode_pairs(teacher, text, (6, m.in_dim, 4, 6), list(range(6)),
                               FlowMatchSchedule(sched.num_train_timesteps, sched.shift),
                               generator_timesteps(platform), num_steps=8, shift=5.0)
    path = tmp_path_factory.mktemp("ode") / "pairs.parquet"
    write_ode_trajectories(path, pairs, pair_indices=range(6), seeds=range(6), prompt_ids=[str(i) for i in range(6)],
                           prompts=[f"p{i}" for i in range(6)], text=text)
    return path


def test_ode_init_resumed_run_equals_an_uninterrupted_one(tmp_path, trajectories):
    """Stopped after 2 of 4 steps and run again: the weights, EMA and optimiser moments of the checkpoint
    continue exactly where they were (the data position is the step number)."""
    common = (f"data.path={trajectories}", "training.max_steps=4", "training.ema={decay: 0.9, start_step: 1}")
    full = run_single_process(_job(ODEInitJobConfig, "tiny_ode_init.yaml", tmp_path, "full", *common), quiet=True)
    job = _job(ODEInitJobConfig, "tiny_ode_init.yaml", tmp_path, "resumed", *common)
    assert run_single_process(job, max_steps=2, quiet=True).steps == 2
    resumed = run_single_process(job, quiet=True)
    attempts = [json.loads(line) for line in (resumed.output_dir / ATTEMPTS_FILE).read_text().splitlines()]
    assert resumed.steps == 4 and [a["resumed_from"] for a in attempts] == [None, 2]
    a, b = _final(full), _final(resumed)
    for name in ("generator", "ema"):
        assert _max_diff(a[name], b[name]) < 1e-6, name
    assert resumed.final_metrics["ode_loss"] == pytest.approx(full.final_metrics["ode_loss"], rel=1e-5)


def test_single_process_self_forcing_equals_local_trainer(tmp_path):
    """The Self Forcing program with its critic in this process (2 accumulated micro-batches, stopped and
    resumed after 2 steps) computes what LocalTrainer computes over the whole batch."""
    job = _job(SelfForcingJobConfig, "tiny_dmd.yaml", tmp_path, "sf", "training.max_steps=4",
               "training.generator_optim.lr=1e-3", "scaling.gradient_accumulation_steps=2")
    run_single_process(job, max_steps=2, quiet=True)
    outcome = run_single_process(job, quiet=True)
    platform, training = job.platform, job.training
    generator = GeneratorRole(load_network(job.models.generator, platform), platform, training)
    real, trained = scoring_networks(job.models, platform, training.objective)
    critic = CriticRole(real, trained, generator.schedule, training, seed=training.seed)
    trainer = LocalTrainer(generator, critic, training)
    source = build_source(job)
    for step in range(4):
        trainer.train_step(source.batch(step, range(training.batch_size)))
    final = _final(outcome, ("generator", "ema", "scoring"))
    assert _max_diff(final["generator"], copy.deepcopy(generator.model.state_dict())) < 1e-4
    assert _max_diff(final["ema"], generator.ema.shadow) < 1e-4
    assert _max_diff(final["scoring"], critic.network.state_dict()) < 1e-4
    assert outcome.summary["state"]["generator_steps"] == 2 and outcome.summary["state"]["critic_steps"] == 4


def test_bad_inputs_fail_naming_what_to_change(tmp_path, trajectories):
    with pytest.raises(ConfigError, match="data.path"):
        _job(TeacherJobConfig, "tiny_teacher.yaml", tmp_path, "x", "data.source=latents")
    with pytest.raises(ValueError, match="scaling.num_workers=2: a single-process run has one worker"):
        run_single_process(load_job_config(TeacherJobConfig, CONFIGS / "tiny_teacher.yaml",
                                           [f"run.storage_path={tmp_path}"]))
    other = load_config("tiny", None, ["schedule.denoising_steps=[1000, 500]"])
    with pytest.raises(ValueError, match="recorded at timesteps .* the student's denoising steps"):
        TrajectorySource(other, str(trajectories), batch_size=2)

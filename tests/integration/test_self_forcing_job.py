"""The distributed Self Forcing job on a local 2-CPU Ray: 2 DeepSpeed generator workers under Ray Train and
scoring actors in their own processes compute what LocalTrainer computes in one process, overlapped or not,
and the job leaves a registered model that serves what it trained."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from selfforcing.config.job import load_job_config
from selfforcing.training import CriticRole, DiscriminatorRole, GeneratorRole, LocalTrainer
from selfforcing.training.distributed.launch import run_self_forcing
from selfforcing.training.distributed.worker_loop import FINAL_DIR, build_source
from selfforcing.training.job_config import SelfForcingJobConfig
from selfforcing.training.networks import load_network, scoring_networks

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4


def _job(tmp_path: Path, name: str, *overrides: str, config: str = "tiny_dmd.yaml") -> SelfForcingJobConfig:
    return load_job_config(SelfForcingJobConfig, ROOT / "jobs" / "configs" / config, [
        f"run.name={name}", f"run.storage_path={tmp_path / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "logging.sample_video=false",
        "training.max_steps=4", "training.generator_optim.lr=1e-3", *overrides,
    ])


def _local_reference(job: SelfForcingJobConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The same run in one process: LocalTrainer over the same global batches."""
    platform, training = job.platform, job.training
    generator = GeneratorRole(load_network(job.models.generator, platform), platform, training)
    real, trained = scoring_networks(job.models, platform, training.objective, training.gan.num_registers)
    if training.objective == "gan":
        role = DiscriminatorRole(trained, generator.schedule, training, seed=training.seed)
    else:
        role = CriticRole(real, trained, generator.schedule, training, seed=training.seed)
    trainer = LocalTrainer(generator, role, training)
    source = build_source(job)
    for step in range(training.max_steps):
        trainer.train_step(source.batch(step, range(training.batch_size)))
    return {
        "generator": copy.deepcopy(generator.model.state_dict()),
        "ema": {k: v.clone() for k, v in generator.ema.shadow.items()},
        "scoring": copy.deepcopy(role.network.state_dict()),
    }


def _final(outcome) -> dict[str, dict[str, torch.Tensor]]:
    folder = outcome.output_dir / FINAL_DIR
    return {name: torch.load(folder / f"{name}.pt") for name in ("generator", "ema", "scoring")}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    job = _job(tmp_path_factory.mktemp("ref"), "ref")
    return _local_reference(job)


@pytest.fixture(scope="module")
def overlapped(ray_session, tmp_path_factory):
    """2 workers (ZeRO-2) + 1 critic actor, overlapped schedule: the default tiny job."""
    tmp = tmp_path_factory.mktemp("overlap")
    job = _job(tmp, "overlap", "logging.sample_video=true")
    return job, run_self_forcing(job), tmp


def test_distributed_equals_local_trainer(overlapped, reference):
    job, outcome, _ = overlapped
    final = _final(outcome)
    assert outcome.steps == 4
    assert outcome.summary["state"]["generator_steps"] == 2 and outcome.summary["state"]["critic_steps"] == 4
    for name in ("generator", "ema", "scoring"):
        assert _max_diff(final[name], reference[name]) < TOL, name
    # and training moved the weights (the comparison is not between two untouched copies)
    start = load_network(job.models.generator, job.platform).state_dict()
    assert _max_diff(final["generator"], start) > 1e-3


def test_job_registers_the_ema_generator_in_mlflow(overlapped):
    from mlflow import MlflowClient

    from selfforcing.models.factory import load_dit
    from selfforcing.tracking import resolve_model

    job, outcome, tmp = overlapped
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert outcome.model_uri == "models:/tiny-dmd@candidate"
    resolved = resolve_model(outcome.model_uri, tracking_uri=uri, cache_dir=tmp / "cache")
    served = load_dit(job.platform, resolved.path)
    ema = _final(outcome)["ema"]
    trained = load_network("random:0", job.platform)
    trained.load_state_dict(ema)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 3, 4, 4, 6, generator=g), torch.full((1, 3), 500.0)
    text = torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(served(x, t, text), trained(x, t, text))
    client = MlflowClient(uri)
    run = client.get_run(outcome.run_id)
    assert run.data.params["training.objective"] == "dmd" and run.data.tags["job"] == "self_forcing"
    assert {"dmd_loss", "critic_loss", "generator_grad_norm"} <= set(run.data.metrics)
    assert len(client.get_metric_history(outcome.run_id, "critic_loss")) == 4
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"losses.png", "sample.mp4", "generator"} <= artifacts
    assert (resolved.path / "selfforcing.yaml").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        # the sequential schedule (the overlapped one is the `overlapped` fixture): both compute LocalTrainer
        ("scoring.num_actors=2", "scaling.zero_stage=1", "scoring.zero_stage=1", "scaling.cpus_per_worker=0.25",
         "scoring.cpus_per_actor=0.25", "overlap=false"),
        # ZeRO-3 everywhere, the frozen teacher partitioned over the two critic actors
        ("scoring.num_actors=2", "scaling.zero_stage=3", "scoring.zero_stage=3", "scoring.real_score_zero3=true",
         "scaling.cpus_per_worker=0.25", "scoring.cpus_per_actor=0.25"),
    ],
    ids=["2actors-zero1-sequential", "2actors-zero3-sharded-teacher"],
)
def test_other_layouts_equal_local_trainer(ray_session, tmp_path, reference, overrides):
    final = _final(run_self_forcing(_job(tmp_path, "layout", *overrides)))
    for name in ("generator", "ema", "scoring"):
        assert _max_diff(final[name], reference[name]) < TOL, name


@pytest.mark.parametrize("config", ["tiny_sid.yaml", "tiny_gan.yaml"])
def test_sid_and_gan_jobs_run_through_the_entrypoint(ray_session, tmp_path, config, monkeypatch):
    import importlib.util

    from mlflow import MlflowClient

    spec = importlib.util.spec_from_file_location("self_forcing_job", ROOT / "jobs" / "self_forcing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    assert module.main(["--config", str(ROOT / "jobs" / "configs" / config), "--max-steps", "2",
                        "logging.sample_video=false"]) == 0
    name = config.removesuffix(".yaml").replace("_", "-")
    version = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(name, "candidate")
    assert str(version.version) == "1"
    # and the distributed SiD / GAN run computed what one process computes
    job = load_job_config(SelfForcingJobConfig, ROOT / "jobs" / "configs" / config, ["training.max_steps=2"])
    reference = _local_reference(job)
    folder = tmp_path / "runs" / name / FINAL_DIR
    for part in ("generator", "ema", "scoring"):
        assert _max_diff(torch.load(folder / f"{part}.pt"), reference[part]) < TOL, part

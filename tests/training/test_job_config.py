"""The distributed job's config: YAML + overrides, clear errors before anything starts, the DeepSpeed
config builder and the cluster-size check."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfforcing.config import ConfigError
from selfforcing.config.job import load_job_config
from selfforcing.training import OptimConfig
from selfforcing.training.distributed.deepspeed_config import build_deepspeed_config, resolve_precision
from selfforcing.training.distributed.launch import check_cluster, required_resources
from selfforcing.training.job_config import SelfForcingJobConfig

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


def _load(*overrides: str, name: str = "tiny_dmd.yaml") -> SelfForcingJobConfig:
    return load_job_config(SelfForcingJobConfig, CONFIGS / name, overrides)


@pytest.mark.parametrize("name", ["tiny_dmd.yaml", "tiny_sid.yaml", "tiny_gan.yaml"])
def test_shipped_tiny_configs_load(name):
    job = _load(name=name)
    assert job.platform.preset == "tiny" and job.platform.model.dim == 64
    assert job.scaling.num_workers == 2 and job.scaling.zero_stage == 2 and job.scoring.num_actors == 1
    assert job.micro_batch_size * job.scaling.num_workers == job.training.batch_size
    assert required_resources(job)["CPU"] <= 2


def test_overrides_reach_nested_fields():
    job = _load("training.max_steps=7", "platform.video.num_frames=9", "scoring.num_actors=2")
    assert job.training.max_steps == 7 and job.platform.video.num_frames == 9 and job.scoring.num_actors == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.objective=kl", ["training.objective", "'dmd'", "'sid'", "'gan'"]),
        ("scaling.zero_stage=4", ["scaling.zero_stage", "1", "2", "3"]),
        ("training.batch_size=3", ["training.batch_size=3", "scaling.num_workers"]),
        ("scoring.num_actors=3", ["scaling.num_workers=2", "scoring.num_actors=3"]),
        ("models.teacher=random:x", ["models.teacher", "random:<integer seed>"]),
        ("platform.preset=huge", ["unknown preset 'huge'", "tiny"]),
        ("scaling.num_workerz=2", ["scaling.num_workerz", "unknown field"]),
    ],
)
def test_bad_configs_name_the_field_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError) as err:
        _load(override)
    for text in expected:
        assert text in str(err.value), str(err.value)


def test_gan_needs_real_latents():
    with pytest.raises(ConfigError, match="needs real latents"):
        _load("data.source=embeddings", "data.path=/x", name="tiny_gan.yaml")


def test_more_actors_than_the_cluster_holds_fails_before_starting():
    job = _load("scoring.num_actors=2", "scoring.cpus_per_actor=1")
    with pytest.raises(ConfigError) as err:
        check_cluster(job, {"CPU": 2.0})
    message = str(err.value)
    assert "scoring.num_actors=2" in message and "needs 3 CPUs" in message and "1..1" in message
    check_cluster(_load(), {"CPU": 2.0})  # the shipped tiny job fits 2 CPUs


def test_deepspeed_config_is_built_from_the_typed_config():
    cfg = build_deepspeed_config(
        OptimConfig(max_grad_norm=1.5), zero_stage=3, micro_batch_size=2, gradient_accumulation_steps=4,
        world_size=8, precision="bf16",
    )
    assert cfg["train_batch_size"] == 64 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["gradient_clipping"] == 1.5 and cfg["bf16"]["enabled"] and cfg["zero_optimization"]["stage"] == 3
    assert build_deepspeed_config(OptimConfig(max_grad_norm=None), zero_stage=1, micro_batch_size=1)[
        "gradient_clipping"] == 0.0
    with pytest.raises(ValueError, match="allowed values are \\[1, 2, 3\\]"):
        build_deepspeed_config(OptimConfig(), zero_stage=0, micro_batch_size=1)
    assert resolve_precision("auto", use_gpu=True) == "bf16" and resolve_precision("auto", use_gpu=False) == "fp32"

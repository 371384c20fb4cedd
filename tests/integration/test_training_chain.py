"""The training pipeline as jobs on one local Ray (2 CPUs, tiny preset), each taking the previous one's output:
encode_prompts -> train_teacher -> ode_pairs -> ode_init -> self_forcing. ode_init and self_forcing run on Ray
Train with 2 DeepSpeed workers (the teacher job runs the same loop in one process); every model is passed on
as a models:/ URI, every dataset as a Parquet path, and every job leaves an MLflow run. The distributed ODE
initialisation equals the same job run in one process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from selfforcing.config.job import load_job_config
from selfforcing.data.pipelines import EncodePromptsJobConfig, ODEPairsJobConfig, encode_prompts, ode_pairs
from selfforcing.training.distributed.launch import run_training
from selfforcing.training.job_config import SelfForcingJobConfig
from selfforcing.training.loop import FINAL_DIR
from selfforcing.training.single_process import run_single_process
from selfforcing.training.supervised_config import ODEInitJobConfig, TeacherJobConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jobs" / "configs"
POOL = ["pool.size=1", "pool.num_cpus=0.5"]


@pytest.fixture
def tracking(tmp_path):
    """An MLflow store named by MLFLOW_TRACKING_URI, as every job sees it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _train(cls, config: str, tmp: Path, *overrides: str):
    return load_job_config(cls, CONFIGS / config, [
        f"run.storage_path={tmp / 'runs'}", "training.max_steps=2", "logging.sample_video=false", *overrides,
    ])


def test_prompts_to_self_forcing_one_job_after_another(ray_session, tmp_path, tracking):
    from mlflow import MlflowClient

    data = tmp_path / "data"
    embeddings = encode_prompts(load_job_config(EncodePromptsJobConfig, CONFIGS / "tiny_encode_prompts.yaml", [
        f"input={REPO / 'jobs' / 'data' / 'tiny_prompts.txt'}", f"run.storage_path={data}", *POOL]))
    # The teacher job in one process (the same loop and program; CI time goes to the jobs the chain is about)
    teacher = run_single_process(_train(TeacherJobConfig, "tiny_teacher.yaml", tmp_path, "scaling.num_workers=1",
                                        "scaling.gradient_accumulation_steps=2"), track=True, quiet=True)
    assert teacher.model_uri == "models:/tiny-teacher@candidate"
    pairs = ode_pairs(load_job_config(ODEPairsJobConfig, CONFIGS / "tiny_ode_pairs.yaml", [
        f"run.storage_path={data}", f"embeddings={embeddings.output}", f"teacher.uri={teacher.model_uri}",
        "num_pairs=8", *POOL]))
    assert pairs.complete and pairs.rows == 8
    ode_job = _train(ODEInitJobConfig, "tiny_ode_init.yaml", tmp_path, f"data.path={pairs.output}",
                     f"models.init={teacher.model_uri}")
    ode = run_training(ode_job)
    assert ode.model_uri == "models:/tiny-ode-init@candidate"
    student = run_training(_train(
        SelfForcingJobConfig, "tiny_dmd.yaml", tmp_path, f"models.generator={ode.model_uri}",
        f"models.teacher={teacher.model_uri}", "data.source=embeddings", f"data.path={embeddings.output}",
    ))
    assert student.steps == 2 and student.model_uri == "models:/tiny-dmd@candidate"

    client = MlflowClient(tracking)
    for run_id, job in ((embeddings.run_id, "encode_prompts"), (pairs.run_id, "ode_pairs")):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["selfforcing.job"] == job
    for outcome, job, loss in ((teacher, "teacher", "fm_loss"), (ode, "ode_init", "ode_loss"),
                               (student, "self_forcing", "dmd_loss")):
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["job"] == job
        assert loss in run.data.metrics and "losses.png" in {a.path for a in client.list_artifacts(outcome.run_id)}
    # Each job's input is the previous one's output, pinned in its params.
    assert client.get_run(ode.run_id).data.params["models.init"] == teacher.model_uri
    assert client.get_run(student.run_id).data.params["models.generator"] == ode.model_uri

    # The ODE initialisation in one process (1 worker accumulating 2 micro-batches, plain guarded AdamW)
    # computes what 2 DeepSpeed ZeRO-2 workers computed.
    single = run_single_process(ode_job.model_copy(update={
        "run": ode_job.run.model_copy(update={"name": "ode-single"}),
        "scaling": ode_job.scaling.model_copy(update={"num_workers": 1, "gradient_accumulation_steps": 2}),
    }), quiet=True)
    a = torch.load(ode.output_dir / FINAL_DIR / "generator.pt")
    b = torch.load(single.output_dir / FINAL_DIR / "generator.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    start = torch.load(teacher.output_dir / FINAL_DIR / "ema.pt")  # the student starts as the teacher
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4

"""``run_self_forcing(job)``: the driver of a distributed Self Forcing job.

Validate -> connect to Ray -> check the cluster can hold the job (before any actor starts) -> open the
MLflow run -> place the scoring actor group -> run the generator workers under Ray Train -> read the
summary rank 0 wrote -> tear down what this call started.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...cluster import connect_ray
from ...config import ConfigError
from ...config.job import dump_job_config
from ...tracking import MlflowTracker, tracking_uri_or_default
from ..job_config import SelfForcingJobConfig
from .worker_loop import FINAL_DIR, METRICS_FILE, SUMMARY_FILE, WorkerLoopConfig, train_loop_per_worker


@dataclass
class TrainingOutcome:
    """What a finished job reports: steps, final metrics, the registered model and where things are."""

    steps: int
    run_id: str | None
    output_dir: Path
    model_uri: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def required_resources(job: SelfForcingJobConfig) -> dict[str, float]:
    s, a = job.scaling, job.scoring
    return {
        "CPU": s.num_workers * s.cpus_per_worker + a.num_actors * a.cpus_per_actor,
        "GPU": (s.num_workers if s.use_gpu else 0) + a.num_actors * a.gpus_per_actor,
    }


def check_cluster(job: SelfForcingJobConfig, available: dict[str, float]) -> None:
    """Fail before anything starts when the job cannot fit the cluster, naming the fields to change."""
    need = required_resources(job)
    s, a = job.scaling, job.scoring
    for kind, amount in need.items():
        have = float(available.get(kind, 0.0))
        if amount > have + 1e-9:
            per_actor = a.cpus_per_actor if kind == "CPU" else a.gpus_per_actor
            per_worker = s.cpus_per_worker if kind == "CPU" else (1.0 if s.use_gpu else 0.0)
            left = have - s.num_workers * per_worker
            most = int(left // per_actor) if per_actor > 0 else 0
            raise ConfigError(
                f"the job needs {amount:g} {kind}s but the Ray cluster has {have:g}: scaling.num_workers="
                f"{s.num_workers} x {per_worker:g} + scoring.num_actors={a.num_actors} x {per_actor:g}. "
                f"Allowed scoring.num_actors with these workers: 1..{max(most, 0)} "
                f"(or lower scaling.num_workers / the per-worker and per-actor resources)"
            )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_self_forcing(job: SelfForcingJobConfig, max_steps: int | None = None) -> TrainingOutcome:
    """Train ``job`` to ``training.max_steps`` (or ``max_steps``) and register the EMA generator."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ...tracking.tracker import flatten_params
    from .scoring_actor import ScoringGroup

    if max_steps is not None:
        job = job.model_copy(update={"training": job.training.model_copy(update={"max_steps": int(max_steps)})})
        SelfForcingJobConfig.model_validate(job.model_dump())
    started = connect_ray(job.ray)
    group = tracker = None
    try:
        check_cluster(job, ray.cluster_resources())
        storage = Path(job.run.storage_path).expanduser().resolve()
        output_dir = storage / job.run.name
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "job.yaml").write_text(dump_job_config(job))
        tracking_uri = tracking_uri_or_default(job.tracking.tracking_uri)
        tags = {"job": "self_forcing", "preset": str(job.platform.preset), "objective": job.training.objective}
        commit = _git_commit()
        if commit:
            tags["git_commit"] = commit
        tracker = MlflowTracker(tracking_uri, experiment=job.tracking.experiment, run_name=job.run.name, tags=tags)
        tracker.log_params(flatten_params(job.model_dump(mode="json")))
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
        (output_dir / METRICS_FILE).unlink(missing_ok=True)

        group = ScoringGroup(job)
        s = job.scaling
        resources = {"CPU": s.cpus_per_worker, **({"GPU": 1.0} if s.use_gpu else {})}
        loop = WorkerLoopConfig(
            job=job.model_dump(mode="json"), actor_names=group.names, run_id=tracker.run_id,
            tracking_uri=tracking_uri, output_dir=str(output_dir),
        )
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=vars(loop),
            scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
            run_config=RunConfig(name=job.run.name, storage_path=str(storage / "ray_train"),
                                 failure_config=FailureConfig(max_failures=0)),
        )
        trainer.fit()
        group.export_network(str(output_dir / FINAL_DIR / "scoring.pt"))
        summary = json.loads((output_dir / SUMMARY_FILE).read_text())
        tracker.close("FINISHED")
        return TrainingOutcome(
            steps=int(summary["steps"]), run_id=tracker.run_id, output_dir=output_dir,
            model_uri=summary.get("model_uri"), final_metrics=summary.get("final_metrics", {}), summary=summary,
        )
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    finally:
        if group is not None:
            group.shutdown()
        if started:
            ray.shutdown()

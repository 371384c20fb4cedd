"""``run_self_forcing(job)``: the driver of a distributed Self Forcing job.

Validate -> connect to Ray -> check the cluster can hold the job (before any actor starts) -> open (or
continue) the MLflow run -> run the generator workers under Ray Train, whose rank 0 places the scoring
actor group -> read the summary rank 0 wrote -> tear down what this call started.

Running the same command again (same run name and storage) continues from the newest complete
checkpoint and the same MLflow run; a finished run only reports that it is finished.
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
from .scoring_actor import remove_group_placement
from .worker_loop import (
    ATTEMPTS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    WorkerLoopConfig,
    checkpoint_store,
    train_loop_per_worker,
)

RUN_FILE = "run.json"  # the run's MLflow run id, kept so the same command continues the same run


class TrainingStopped(RuntimeError):
    """The run stopped before its last step (non-finite training, or faults beyond the retry budget)."""


@dataclass
class TrainingOutcome:
    """What a finished job reports: steps, final metrics, the registered model and where things are."""

    steps: int
    run_id: str | None
    output_dir: Path
    model_uri: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    already_finished: bool = False


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _open_run(job: SelfForcingJobConfig, output_dir: Path, tracking_uri: str) -> MlflowTracker:
    """The run's MLflow run: continued when this run name and storage already have one."""
    from ...tracking.tracker import flatten_params

    saved = _read_json(output_dir / RUN_FILE)
    if saved and saved.get("tracking_uri") == tracking_uri:
        tracker = MlflowTracker(tracking_uri, run_id=saved["run_id"])
        tracker.client.update_run(saved["run_id"], status="RUNNING")
        return tracker
    tags = {"job": "self_forcing", "preset": str(job.platform.preset), "objective": job.training.objective}
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    tracker = MlflowTracker(tracking_uri, experiment=job.tracking.experiment, run_name=job.run.name, tags=tags)
    tracker.log_params(flatten_params(job.model_dump(mode="json")))
    (output_dir / RUN_FILE).write_text(json.dumps({"run_id": tracker.run_id, "tracking_uri": tracking_uri}))
    return tracker


def _failure_message(job: SelfForcingJobConfig, output_dir: Path, error: BaseException) -> str:
    attempts = (output_dir / ATTEMPTS_FILE).read_text().splitlines() if (output_dir / ATTEMPTS_FILE).exists() else []
    latest = checkpoint_store(job, output_dir).latest()
    where = f"{latest.path} (step {latest.step})" if latest else "none (no complete checkpoint was written)"
    cause = str(error).strip().splitlines()
    return (
        f"training of run {job.run.name!r} failed after {len(attempts)} attempt(s) "
        f"(fault.max_failures={job.fault.max_failures} restarts allowed). Last error: "
        f"{cause[0] if cause else type(error).__name__}. Last good checkpoint: {where}. "
        f"Run the same command again to continue from it."
    )


def run_self_forcing(job: SelfForcingJobConfig, max_steps: int | None = None) -> TrainingOutcome:
    """Train ``job`` to ``training.max_steps`` (or ``max_steps``) and register the EMA generator."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if max_steps is not None:
        job = SelfForcingJobConfig.model_validate(
            {**job.model_dump(), "training": {**job.training.model_dump(), "max_steps": int(max_steps)}}
        )
    storage = Path(job.run.storage_path).expanduser().resolve()
    output_dir = storage / job.run.name
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = _read_json(output_dir / SUMMARY_FILE)
    if summary and summary.get("finished") and summary.get("steps", -1) >= job.training.max_steps:
        run = _read_json(output_dir / RUN_FILE) or {}
        print(f"[{job.run.name}] already finished ({summary['steps']} steps); model "
              f"{summary.get('model_uri', '(not registered)')}; outputs in {output_dir}", flush=True)
        return TrainingOutcome(int(summary["steps"]), run.get("run_id"), output_dir, summary.get("model_uri"),
                               summary.get("final_metrics", {}), summary, already_finished=True)

    started = connect_ray(job.ray)
    tracker = None
    try:
        check_cluster(job, ray.cluster_resources())
        tracking_uri = tracking_uri_or_default(job.tracking.tracking_uri)
        fresh = checkpoint_store(job, output_dir).latest() is None and not job.checkpoint.resume_from
        if fresh:
            for name in (METRICS_FILE, ATTEMPTS_FILE, RUN_FILE):
                (output_dir / name).unlink(missing_ok=True)
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
        (output_dir / "job.yaml").write_text(dump_job_config(job))
        tracker = _open_run(job, output_dir, tracking_uri)

        s = job.scaling
        resources = {"CPU": s.cpus_per_worker, **({"GPU": 1.0} if s.use_gpu else {})}
        loop = WorkerLoopConfig(job=job.model_dump(mode="json"), run_id=tracker.run_id,
                                tracking_uri=tracking_uri, output_dir=str(output_dir))
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=vars(loop),
            scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
            run_config=RunConfig(name=job.run.name, storage_path=str(storage / "ray_train"),
                                 failure_config=FailureConfig(max_failures=job.fault.max_failures)),
        )
        try:
            trainer.fit()
        except Exception as err:
            raise TrainingStopped(_failure_message(job, output_dir, err)) from err
        finally:
            remove_group_placement(job.run.name)  # whatever the last attempt's rank 0 could not release
        summary = json.loads((output_dir / SUMMARY_FILE).read_text())
        if not summary.get("finished"):
            raise TrainingStopped(f"run {job.run.name!r} stopped: {summary.get('stopped')}")
        return TrainingOutcome(
            steps=int(summary["steps"]), run_id=tracker.run_id, output_dir=output_dir,
            model_uri=summary.get("model_uri"), final_metrics=summary.get("final_metrics", {}), summary=summary,
        )
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    finally:
        if started:
            ray.shutdown()

"""``run_training(job)``: the driver of every distributed training job (Self Forcing, teacher, ODE init).

Validate -> connect to Ray -> check the cluster can hold the job (before any actor starts) -> open (or
continue) the MLflow run -> run the workers under Ray Train (``worker_loop``; for Self Forcing, rank 0
places the scoring actor group) -> read the summary rank 0 wrote -> tear down what this call started.

Running the same command again (same run name and storage) continues from the newest complete
checkpoint and the same MLflow run; a finished run only reports that it is finished.
"""

from __future__ import annotations

from ...cluster import connect_ray
from ...config import ConfigError
from ...tracking import tracking_uri_or_default
from ..job_config import SelfForcingJobConfig, TrainingJobBase
from ..run_storage import RunStorage
from ..runs import (
    TrainingOutcome,
    TrainingStopped,
    failure_message,
    finished_outcome,
    open_run,
    outcome_from_summary,
    prepare_output,
    run_output_dir,
)
from .scoring_actor import remove_group_placement
from .worker_loop import WorkerLoopConfig, train_loop_per_worker

__all__ = ["TrainingOutcome", "TrainingStopped", "check_cluster", "required_resources", "run_ode_init",
           "run_self_forcing", "run_teacher", "run_training"]


def required_resources(job: TrainingJobBase) -> dict[str, float]:
    s = job.scaling
    need = {"CPU": s.num_workers * s.cpus_per_worker, "GPU": float(s.num_workers if s.use_gpu else 0)}
    if isinstance(job, SelfForcingJobConfig):
        a = job.scoring
        need["CPU"] += a.num_actors * a.cpus_per_actor
        need["GPU"] += a.num_actors * a.gpus_per_actor
    return need


def check_cluster(job: TrainingJobBase, available: dict[str, float]) -> None:
    """Fail before anything starts when the job cannot fit the cluster, naming the fields to change."""
    need = required_resources(job)
    s = job.scaling
    for kind, amount in need.items():
        have = float(available.get(kind, 0.0))
        if amount <= have + 1e-9:
            continue
        per_worker = s.cpus_per_worker if kind == "CPU" else (1.0 if s.use_gpu else 0.0)
        if not isinstance(job, SelfForcingJobConfig):
            raise ConfigError(
                f"the job needs {amount:g} {kind}s but the Ray cluster has {have:g}: scaling.num_workers="
                f"{s.num_workers} x {per_worker:g}; lower scaling.num_workers or scaling.cpus_per_worker"
            )
        a = job.scoring
        per_actor = a.cpus_per_actor if kind == "CPU" else a.gpus_per_actor
        left = have - s.num_workers * per_worker
        most = int(left // per_actor) if per_actor > 0 else 0
        raise ConfigError(
            f"the job needs {amount:g} {kind}s but the Ray cluster has {have:g}: scaling.num_workers="
            f"{s.num_workers} x {per_worker:g} + scoring.num_actors={a.num_actors} x {per_actor:g}. "
            f"Allowed scoring.num_actors with these workers: 1..{max(most, 0)} "
            f"(or lower scaling.num_workers / the per-worker and per-actor resources)"
        )


def run_training(job: TrainingJobBase, max_steps: int | None = None) -> TrainingOutcome:
    """Train ``job`` to ``training.max_steps`` (or ``max_steps``) on Ray and register its result."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    job = job.with_max_steps(max_steps)
    output_dir = run_output_dir(job)
    done = finished_outcome(job, output_dir)
    if done is not None:
        return done

    started = connect_ray(job.ray)
    tracker = None
    try:
        check_cluster(job, ray.cluster_resources())
        tracking_uri = tracking_uri_or_default(job.tracking.tracking_uri)
        job = job.with_tracking_uri(tracking_uri)
        prepare_output(job, output_dir)
        tracker = open_run(job, output_dir, tracking_uri)

        s = job.scaling
        resources = {"CPU": s.cpus_per_worker, **({"GPU": 1.0} if s.use_gpu else {})}
        loop = WorkerLoopConfig(kind=job.kind, job=job.model_dump(mode="json"), run_id=tracker.run_id,
                                tracking_uri=tracking_uri, output_dir=str(output_dir))
        storage_path, storage_filesystem = RunStorage.for_run(job.run, output_dir).ray_train_storage()
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=vars(loop),
            scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
            run_config=RunConfig(name=job.run.name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                                 failure_config=FailureConfig(max_failures=job.fault.max_failures)),
        )
        try:
            trainer.fit()
        except Exception as err:
            raise TrainingStopped(failure_message(job, output_dir, err)) from err
        finally:
            if isinstance(job, SelfForcingJobConfig):
                remove_group_placement(job.run.name)  # whatever the last attempt's rank 0 could not release
        return outcome_from_summary(job, output_dir, tracker.run_id)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    finally:
        if started:
            ray.shutdown()


# The jobs by name (``jobs/self_forcing.py``, ``jobs/train_teacher.py``, ``jobs/ode_init.py``).
run_self_forcing = run_training
run_teacher = run_training
run_ode_init = run_training

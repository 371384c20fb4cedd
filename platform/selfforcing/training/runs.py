"""A training run as its driver sees it: the output folder, the MLflow run, the outcome.

Shared by the Ray driver (``distributed.launch``) and the single-process path (``single_process``):
running the same job again (same run name and storage) continues from the newest complete checkpoint and
the same MLflow run; a finished run only reports that it is finished and where its model is. With a URI
``run.storage_path`` the driver works in its local copy of the run folder (``run_storage``): it pulls the
run's records where it reads them and pushes what it writes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.job import dump_job_config
from .job_config import TrainingJobBase
from .loop import ATTEMPTS_FILE, FINAL_DIR, METRICS_FILE, MODEL_DIR, SUMMARY_FILE, checkpoint_store
from .run_storage import RunStorage

RUN_FILE = "run.json"  # the run's MLflow run id, kept so the same command continues the same run
JOB_FILE = "job.yaml"  # the config of the latest attempt
RECORDS = (RUN_FILE, SUMMARY_FILE, JOB_FILE, METRICS_FILE, ATTEMPTS_FILE)  # what the driver reads and writes


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

    @property
    def model_dir(self) -> Path | None:
        """The exported model (a ``save_generator`` directory), the next job's input without MLflow."""
        folder = self.summary.get("model_dir")
        return Path(folder) if folder else None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_output_dir(job: TrainingJobBase) -> Path:
    """The run's folder on this machine (made). A URI storage is checked first (a ``ConfigError`` naming
    ``run.storage_path`` before Ray or any actor starts), and the run's records are pulled from it."""
    storage = RunStorage.for_run(job.run, check=True)
    storage.local.mkdir(parents=True, exist_ok=True)
    storage.pull(*RECORDS)
    return storage.local


def _pull_final(job: TrainingJobBase, output_dir: Path, summary: dict[str, Any]) -> None:
    """With a URI storage: the exported model here, and the summary pointing at this machine's copy."""
    storage = RunStorage.for_run(job.run, output_dir)
    if storage.is_remote and summary.get("model_dir"):
        storage.pull(FINAL_DIR)
        summary["model_dir"] = str(output_dir / FINAL_DIR / MODEL_DIR)


def finished_outcome(job: TrainingJobBase, output_dir: Path, quiet: bool = False) -> TrainingOutcome | None:
    """The outcome of this run if it already finished ``training.max_steps`` steps, else None."""
    summary = read_json(output_dir / SUMMARY_FILE)
    if not (summary and summary.get("finished") and summary.get("steps", -1) >= job.training.max_steps):
        return None
    _pull_final(job, output_dir, summary)
    run = read_json(output_dir / RUN_FILE) or {}
    if not quiet:
        print(f"[{job.run.name}] already finished ({summary['steps']} steps); model "
              f"{summary.get('model_uri', '(not registered)')}; outputs in {output_dir}", flush=True)
    return TrainingOutcome(int(summary["steps"]), run.get("run_id"), output_dir, summary.get("model_uri"),
                           summary.get("final_metrics", {}), summary, already_finished=True)


def prepare_output(job: TrainingJobBase, output_dir: Path) -> None:
    """A fresh run forgets a previous run's records; every attempt writes the config it runs."""
    storage = RunStorage.for_run(job.run, output_dir)
    fresh = storage.latest_location(checkpoint_store(job, output_dir)) is None and not job.checkpoint.resume_from
    if fresh:
        for name in (METRICS_FILE, ATTEMPTS_FILE, RUN_FILE):
            (output_dir / name).unlink(missing_ok=True)
    (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
    (output_dir / JOB_FILE).write_text(dump_job_config(job))
    storage.push(*RECORDS)


def job_tags(job: TrainingJobBase) -> dict[str, str]:
    tags = {"job": job.kind, "preset": str(job.platform.preset)}
    objective = getattr(job.training, "objective", None) or getattr(job.training, "loss", None)
    if objective:
        tags["objective"] = str(objective)
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def open_run(job: TrainingJobBase, output_dir: Path, tracking_uri: str):
    """The run's MLflow run (an ``MlflowTracker``): continued when this run name and storage have one."""
    from ..tracking import MlflowTracker
    from ..tracking.tracker import flatten_params

    saved = read_json(output_dir / RUN_FILE)
    if saved and saved.get("tracking_uri") == tracking_uri:
        tracker = MlflowTracker(tracking_uri, run_id=saved["run_id"])
        tracker.client.update_run(saved["run_id"], status="RUNNING")
        return tracker
    tracker = MlflowTracker(tracking_uri, experiment=job.tracking.experiment, run_name=job.run.name, tags=job_tags(job))
    params = flatten_params(job.model_dump(mode="json"))
    keys = sorted(params)
    for a in range(0, len(keys), 100):  # MLflow takes at most 100 params per batch
        tracker.log_params({k: params[k] for k in keys[a : a + 100]})
    (output_dir / RUN_FILE).write_text(json.dumps({"run_id": tracker.run_id, "tracking_uri": tracking_uri}))
    RunStorage.for_run(job.run, output_dir).push(RUN_FILE)
    return tracker


def failure_message(job: TrainingJobBase, output_dir: Path, error: BaseException) -> str:
    storage = RunStorage.for_run(job.run, output_dir)
    try:
        storage.pull(ATTEMPTS_FILE)
        latest = storage.latest_location(checkpoint_store(job, output_dir))
        where = f"{latest[0]} (step {latest[1]})" if latest else "none (no complete checkpoint was written)"
    except OSError as exc:  # an unreadable storage must not hide the error being reported
        where = f"unknown (reading {storage.uri or storage.local} failed: {exc})"
    attempts = (output_dir / ATTEMPTS_FILE).read_text().splitlines() if (output_dir / ATTEMPTS_FILE).exists() else []
    cause = str(error).strip().splitlines()
    return (
        f"training of run {job.run.name!r} failed after {len(attempts)} attempt(s) "
        f"(fault.max_failures={job.fault.max_failures} restarts allowed). Last error: "
        f"{cause[0] if cause else type(error).__name__}. Last good checkpoint: {where}. "
        f"Run the same command again to continue from it."
    )


def outcome_from_summary(
    job: TrainingJobBase, output_dir: Path, run_id: str | None, pull: bool = True
) -> TrainingOutcome:
    """The outcome rank 0 wrote, or ``TrainingStopped`` when the run stopped early. ``pull``: rank 0 ran
    elsewhere, so a URI storage's records (and the exported model) are fetched first."""
    if pull:
        RunStorage.for_run(job.run, output_dir).pull(SUMMARY_FILE, METRICS_FILE, ATTEMPTS_FILE)
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    if not summary.get("finished"):
        raise TrainingStopped(f"run {job.run.name!r} stopped: {summary.get('stopped')}")
    if pull:
        _pull_final(job, output_dir, summary)
    return TrainingOutcome(
        steps=int(summary["steps"]), run_id=run_id, output_dir=output_dir, model_uri=summary.get("model_uri"),
        final_metrics=summary.get("final_metrics", {}), summary=summary,
    )

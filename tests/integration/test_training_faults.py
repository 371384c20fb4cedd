"""Faults cost minutes, never the run: a killed generator worker or scoring actor resumes from the last
checkpoint and ends with the weights of a run that never stopped; a run resumes on another cluster shape
(on another node, from a URI storage); a finished run's command only reports; non-finite training stops
with a clear error."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from selfforcing.config.job import load_job_config
from selfforcing.training.checkpoint_store import COMPLETE
from selfforcing.training.distributed.launch import TrainingStopped, run_self_forcing
from selfforcing.training.distributed.worker_loop import ATTEMPTS_FILE, CHECKPOINT_DIR, FINAL_DIR, PIDS_DIR
from selfforcing.training.job_config import SelfForcingJobConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STEPS = 10  # checkpoints every 2 steps: room for a kill in each of two attempts


def _job(tmp: Path, name: str, *overrides: str) -> SelfForcingJobConfig:
    return load_job_config(SelfForcingJobConfig, ROOT / "jobs" / "configs" / "tiny_dmd.yaml", [
        f"run.name={name}", f"run.storage_path={tmp / 'runs'}", f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        "logging.sample_video=false", f"training.max_steps={STEPS}", "training.generator_optim.lr=1e-3",
        "checkpoint.every_n_steps=2", "fault.max_failures=1", *overrides,
    ])


def _final(output_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {n: torch.load(output_dir / FINAL_DIR / f"{n}.pt") for n in ("generator", "ema", "scoring")}


def _max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _on_uri(tmp: Path, node: str) -> tuple[str, str]:
    """A run on a file:// storage (pyarrow's filesystem interface, as s3:// or gs://) with its own node folder."""
    return f"run.storage_path=file://{tmp / 'bucket'}", f"run.local_dir={tmp / node}"


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    """The reference run, on a URI storage, keeping every checkpoint (the elastic test resumes from one)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    outcome = run_self_forcing(_job(tmp, "uninterrupted", *_on_uri(tmp, "node"), "checkpoint.num_to_keep=10"))
    return tmp, outcome


def _wait(condition, thread: threading.Thread, what: str, deadline: float) -> None:
    while not condition():
        assert thread.is_alive() and time.monotonic() < deadline, f"the run ended before {what}"
        time.sleep(0.05)


def _attempts(out: Path) -> list[dict]:
    path = out / ATTEMPTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run_and_kill(job: SelfForcingJobConfig, victims: list[str]):
    """Run ``job`` in a thread; in attempt ``i``, once a checkpoint past its starting point is complete,
    SIGKILL the process named by ``victims[i]`` (a pid file). Returns the outcome, the attempts, the pids."""
    out = Path(job.run.storage_path) / job.run.name
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(outcome=run_self_forcing(job)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 900
    killed = []
    for i, pid_file in enumerate(victims):
        _wait(lambda n=i: len(_attempts(out)) > n, thread, f"attempt {i + 1} started", deadline)
        start = _attempts(out)[i]["resumed_from"] or 0
        mark = out / CHECKPOINT_DIR / f"step_{start + 2:08d}" / COMPLETE
        _wait(mark.exists, thread, f"attempt {i + 1} wrote a checkpoint", deadline)
        victim = int((out / PIDS_DIR / pid_file).read_text())
        assert victim not in killed  # the restarted process, not the one killed before
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    thread.join(timeout=900)
    assert "outcome" in result, "the run did not finish after the kills"
    return result["outcome"], _attempts(out), killed


def test_killed_worker_then_killed_critic_resume_and_match_an_uninterrupted_run(uninterrupted, tmp_path):
    """SIGKILL of generator worker 1 in the first attempt, then of the critic actor in the second: each
    restarts the step group from the last checkpoint, and the run ends with the exact step count and the
    weights of a run that never stopped."""
    job = _job(tmp_path, "killed", "fault.max_failures=2")
    outcome, attempts, pids = _run_and_kill(job, ["worker_1.pid", "scoring_0.pid"])
    assert outcome.steps == STEPS and outcome.summary["state"]["generator_steps"] == STEPS // 2
    assert len(attempts) == 3 and attempts[0]["resumed_from"] is None
    assert 2 <= attempts[1]["resumed_from"] < attempts[2]["resumed_from"] < STEPS
    reference = _final(uninterrupted[1].output_dir)
    final = _final(outcome.output_dir)
    for name in ("generator", "ema", "scoring"):
        assert _max_diff(final[name], reference[name]) < 1e-5, name
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_elastic_resume_on_one_worker_at_zero3_on_a_new_node(uninterrupted, tmp_path):
    """The reference run's step-4 checkpoint, saved by 2 workers at ZeRO-2, resumed by 1 worker at ZeRO-3
    accumulating 2 micro-batches (the same global batch) on a node that has none of its files: every
    process takes the checkpoint from the URI storage, and the run ends with the reference's weights."""
    tmp, reference_run = uninterrupted
    source = f"file://{tmp / 'bucket' / 'uninterrupted' / CHECKPOINT_DIR / 'step_00000004'}"
    assert (tmp / "bucket" / "uninterrupted" / CHECKPOINT_DIR / "step_00000004" / COMPLETE).exists()
    resumed = run_self_forcing(_job(
        tmp_path, "elastic", *_on_uri(tmp_path, "new-node"), f"checkpoint.resume_from={source}",
        "scaling.num_workers=1", "scaling.zero_stage=3", "scoring.zero_stage=3",
        "scaling.gradient_accumulation_steps=2", "scaling.cpus_per_worker=1", "checkpoint.every_n_steps=0",
    ))
    assert resumed.output_dir.is_relative_to(tmp_path / "new-node")
    attempts = [json.loads(line) for line in (resumed.output_dir / ATTEMPTS_FILE).read_text().splitlines()]
    assert resumed.steps == STEPS and [a["resumed_from"] for a in attempts] == [4]
    reference, final = _final(reference_run.output_dir), _final(resumed.output_dir)
    for name in ("generator", "ema", "scoring"):
        assert _max_diff(final[name], reference[name]) < 1e-4, name
    assert (tmp_path / "bucket" / "elastic" / CHECKPOINT_DIR / f"step_{STEPS:08d}" / COMPLETE).exists()


def test_rerunning_a_finished_job_only_reports(uninterrupted, capsys):
    tmp, outcome = uninterrupted
    again = run_self_forcing(_job(tmp, "uninterrupted", *_on_uri(tmp, "another-node")))  # pulls its records
    assert again.already_finished and again.steps == STEPS and again.run_id == outcome.run_id
    assert "already finished" in capsys.readouterr().out


def test_non_finite_training_stops_with_a_clear_error(ray_session, tmp_path):
    """A teacher with NaN weights makes every critic update non-finite: the run stops after the limit,
    naming it and the last good checkpoint, instead of training on garbage."""
    from selfforcing.config import load_config
    from selfforcing.models.factory import build_dit, save_generator

    platform = load_config("tiny")
    broken = build_dit(platform, seed=1)
    with torch.no_grad():
        broken.head.head.weight.fill_(float("nan"))
    save_generator(platform, broken, tmp_path / "nan_teacher")
    job = _job(tmp_path, "nan", f"models.teacher={tmp_path / 'nan_teacher'}", "fault.max_consecutive_nonfinite=3")
    with pytest.raises(TrainingStopped) as err:
        run_self_forcing(job)
    message = str(err.value)
    import re

    streak = re.search(r"(\d+) steps in a row had a non-finite loss or gradient", message)
    assert streak and 3 <= int(streak.group(1)) <= 4, message  # overlapped: the stop is seen a step late
    assert "fault.max_consecutive_nonfinite=3" in message and "last good checkpoint" in message

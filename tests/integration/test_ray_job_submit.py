"""`ray job submit` of the tiny Self Forcing job against a Ray head this test starts (and stops, by pid):
the way users run the platform's jobs on a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def ray_head(tmp_path):
    """A separate 2-CPU head with its own ports (other Ray instances may run on this machine)."""
    gcs, dash, agent, agent_grpc, metrics, runtime_env, client = _free_ports(7)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve proxies behind a load
    # balancer); this head serves nothing, so it stops at once.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    # The job's `python` must be this environment's, as on a cluster whose image has the dependencies.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Its own temp dir: a bare `ray.init()` elsewhere on this machine must not attach to this head.
    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
    env["RAY_TMPDIR"] = temp_dir  # where `ray start` records "the current cluster" for later `ray.init()`s
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
         f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _ray(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True,
                          text=True, timeout=timeout)


def test_ray_job_submit_runs_the_tiny_job_and_logs_steps(ray_head, tmp_path):
    address, env = ray_head
    job_id = f"tiny-dmd-{os.getpid()}"
    command = [
        "job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", ".",
        "--runtime-env", "jobs/runtime_env.yaml", "--", "python", "jobs/self_forcing.py",
        "--config", "jobs/configs/tiny_dmd.yaml", "--max-steps", "2", "logging.sample_video=false",
        f"run.storage_path={tmp_path / 'runs'}",
    ]
    deadline = time.monotonic() + 180
    while True:  # the head's job agent comes up some seconds after the dashboard
        # Without --no-wait, `ray job submit` follows the job to its end and returns its exit status.
        submitted = _ray(command, env, timeout=900)
        out = submitted.stdout + submitted.stderr
        retry = "No available agent" in out or "Failed to connect to Ray" in out
        if not retry or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert submitted.returncode == 0, (submitted.stdout + submitted.stderr)[-5000:]
    status = _ray(["job", "status", "--address", address, job_id], env, timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    logs = _ray(["job", "logs", "--address", address, job_id], env, timeout=60).stdout
    assert "[tiny-dmd] step 1/2 |" in logs and "[tiny-dmd] step 2/2 |" in logs, logs[-3000:]
    assert "critic_loss" in logs and "steps/s" in logs
    assert "model models:/tiny-dmd@candidate" in logs

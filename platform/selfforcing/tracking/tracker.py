"""The ``Tracker`` protocol that training code logs through, a no-op one and the MLflow one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """What training and evaluation code may log. Only rank 0 / actor-group leaders hold a real one."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Hyper-parameters (flattened ``a.b.c`` keys); logged once per run."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalar metrics at a training step."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a directory (videos, plots, checkpoints) under ``artifact_path`` of the run."""

    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED / FAILED; idempotent)."""


class NullTracker:
    """Logs nothing: for non-leader ranks and for tests."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def close(self, status: str = "FINISHED") -> None:
        return None


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b": "value"}``; MLflow params are flat strings (max 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


class MlflowTracker:
    """One MLflow run. The tracking URI is always explicit (see ``tracking_uri_or_default``).

    The run is started on construction and ended by ``close`` (or the context manager); ``run_id`` is
    what ``register_generator(..., run_id=)`` attaches a model version to.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "selfforcing",
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        from mlflow import MlflowClient

        from .registry import experiment_id, tracking_uri_or_default

        self.tracking_uri = tracking_uri_or_default(tracking_uri)
        self.client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        if run_id is None:
            exp_id = experiment_id(self.client, experiment, self.tracking_uri)
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        self.run_id = run_id
        self._closed = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self.client.set_terminated(self.run_id, status=status)
            self._closed = True

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close("FAILED" if exc_type else "FINISHED")

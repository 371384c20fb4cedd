"""The Tracker interface and its MLflow implementation on a sqlite store."""

from __future__ import annotations

from mlflow import MlflowClient

from selfforcing.tracking import MlflowTracker, NullTracker, Tracker
from selfforcing.tracking.tracker import flatten_params


def test_null_tracker_is_a_tracker():
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.close()


def test_mlflow_tracker_logs_params_metrics_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "plot.txt").write_text("hi")
    with MlflowTracker(uri, experiment="t", run_name="r") as tracker:
        assert isinstance(tracker, Tracker)
        tracker.log_params({"model": {"dim": 64}, "lr": 1e-4})
        tracker.log_metrics({"loss": 0.5}, step=3)
        tracker.log_artifact(tmp_path / "plot.txt", "plots")
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.params == {"model.dim": "64", "lr": "0.0001"}
    assert run.data.metrics == {"loss": 0.5} and run.info.status == "FINISHED"
    assert [a.path for a in MlflowClient(uri).list_artifacts(tracker.run_id, "plots")] == ["plots/plot.txt"]


def test_flatten_params():
    assert flatten_params({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": "1", "d": "[1, 2]"}

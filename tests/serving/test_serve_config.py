"""serve/config.yaml is a valid Serve deploy config whose args build the application (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

from selfforcing.serving.app import ServeArgs, build_app

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"


def test_yaml_is_a_serve_deploy_config_with_typed_args():
    data = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "selfforcing.serving.app:build_app"
    names = {d.name: d for d in app.deployments}
    assert set(names) == {"VideoAPI", "TextEncoder", "Generator", "JobStore"}
    generator = names["Generator"]
    assert generator.autoscaling_config["max_replicas"] >= generator.autoscaling_config["min_replicas"]
    assert generator.ray_actor_options.num_gpus == 0  # set to 1 per replica on GPU clusters
    assert all(d.ray_actor_options.num_cpus < 1 for d in app.deployments)  # fits a 2-CPU machine
    args = ServeArgs.model_validate(app.args)
    assert args.model_uri is None and args.default_model_uri == "models:/toy-world@production"


def test_builder_is_typed_and_only_a_uri_selects_the_model(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    built = call_user_app_builder_with_args_if_necessary(
        build_app, {"model_uri": "models:/m@prod", "tracking_uri": f"sqlite:///{db}"})
    assert built is not None
    assert db.exists()  # the builder created the registry's store before any replica could race on it
    assert ServeArgs.model_validate({"model_uri": "models:/m@prod"}).source().model_uri == "models:/m@prod"


def test_serve_never_refuses_before_the_generators_admission():
    """Serve answers 503 itself when a replica has max_ongoing_requests calls or a caller has
    max_queued_requests pending (a burst counts as pending while it is routed): both must exceed what
    the ingress replicas can send at once, so the generator's admission is the one that decides."""
    app = yaml.safe_load(CONFIG.read_text())["applications"][0]
    names = {d["name"]: d for d in app["deployments"]}
    ingress, generator = names["VideoAPI"], names["Generator"]
    args = ServeArgs.model_validate(app["args"])
    callers = (ingress["max_ongoing_requests"] + args.max_active_jobs) * ingress.get("num_replicas", 1)
    assert generator["max_ongoing_requests"] >= callers
    assert generator["max_queued_requests"] == -1 or generator["max_queued_requests"] >= callers
    assert args.max_streams + args.max_waiting < generator["max_ongoing_requests"]

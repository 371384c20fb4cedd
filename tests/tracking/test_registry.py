"""Registering generator directories and resolving models:/ URIs back to local directories."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models.factory import build_dit, load_dit, save_generator
from selfforcing.tracking import MlflowTracker, register_generator, resolve_model, resolve_model_source


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_register_and_resolve_by_alias_and_version(tmp_path, uri, monkeypatch):
    monkeypatch.setenv("SELFFORCING_MODEL_CACHE", str(tmp_path / "cache"))
    config = load_config("tiny", overrides=["runtime.device=cpu"])
    model = build_dit(config, seed=3)
    first = register_generator(save_generator(config, model, tmp_path / "gen"), "toy", "production", uri)
    second = register_generator((config, build_dit(config, seed=4)), "toy", "production", uri)
    assert (first.version, second.version) == ("1", "2")
    assert second.model_uri == "models:/toy@production"

    resolved = resolve_model("models:/toy@production", uri)
    assert (resolved.name, resolved.version, resolved.alias) == ("toy", "2", "production")
    assert (resolved.path / "selfforcing.yaml").exists()
    v1 = resolve_model_source("models:/toy/1", uri)
    loaded = load_dit(config, v1, device="cpu")
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert resolve_model("models:/toy@production", uri).path == resolved.path  # cached download


def test_register_into_an_existing_run(tmp_path, uri):
    config = load_config("tiny")
    with MlflowTracker(uri, experiment="train") as tracker:
        reg = register_generator((config, build_dit(config)), "toy", None, uri, run_id=tracker.run_id)
    assert reg.run_id == tracker.run_id and reg.model_uri == "models:/toy/1"


def test_clear_errors(tmp_path, uri):
    with pytest.raises(FileNotFoundError, match="not a generator directory"):
        register_generator(tmp_path, "toy", "production", uri)
    config = load_config("tiny")
    register_generator((config, build_dit(config)), "toy", "production", uri)
    with pytest.raises(LookupError, match="Registered models: \\['toy'\\]"):
        resolve_model("models:/toy@staging", uri)
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(tmp_path / "missing", uri)
